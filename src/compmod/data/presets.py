"""PLACEHOLDER: replaced by the augmentation work (view presets per method)."""

from typing import Any


def augment_preset(name: str) -> dict[str, Any]:
    return {}
