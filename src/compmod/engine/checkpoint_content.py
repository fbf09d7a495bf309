"""What a loaded checkpoint holds, checked: its config, its image format, weights that fit a module.

A checkpoint that lacks an entry, holds one of the wrong kind, or holds weights that do not fit the model
built from its config is a one-line `CheckpointError` naming the file, never a KeyError or torch's
multi-line `load_state_dict` report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compmod.errors import CheckpointError


def saved_config(state: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """The checkpoint's `config` entry (a nested dict, as `config_to_dict` wrote it)."""
    if "config" not in state:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no 'config' entry, so the model it holds cannot be rebuilt; "
            "it was not written by `compmod train`"
        )
    config = state["config"]
    if not isinstance(config, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its 'config' entry is a {type(config).__name__}, expected a mapping "
            "of config sections"
        )
    return config


def saved_image_format(
    state: Mapping[str, Any], path: str | Path
) -> tuple[tuple[int, int, int], tuple[float, ...], tuple[float, ...]]:
    """((C, H, W), per-channel mean, per-channel std) of the images the checkpoint's model was trained on."""
    data = state.get("data")
    try:
        shape = tuple(int(v) for v in data["shape"])  # type: ignore[index]
        mean = tuple(float(v) for v in data["mean"])  # type: ignore[index]
        std = tuple(float(v) for v in data["std"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        shape, mean, std = (), (), ()
    if len(shape) != 3 or len(mean) != shape[0] or len(std) != shape[0]:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no valid 'data' entry (image shape C, H, W and per-channel "
            "mean and std); it was not written by `compmod train`"
        )
    return shape, mean, std  # type: ignore[return-value]


def _first(items: Sequence[str]) -> str:
    return f" (first: {items[0]})" if items else ""


def load_matching(
    module: nn.Module, tensors: Any, path: str | Path, built_from: str = "its config", entry: str = "model"
) -> None:
    """`module.load_state_dict(tensors)`, or a one-line CheckpointError counting the missing keys,
    unexpected keys and shape mismatches and naming the first. `built_from` says what the module was
    built from (e.g. "its config with --set method.proj_dim=64")."""
    if not isinstance(tensors, Mapping):
        raise CheckpointError(f"checkpoint {str(path)!r}: its {entry!r} entry is not a mapping of tensors")
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [
        f"{k} {tuple(tensors[k].shape)} in the checkpoint vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and (not isinstance(tensors[k], torch.Tensor) or tensors[k].shape != v.shape)
    ]
    if missing or unexpected or shapes:
        first = (
            _first(shapes)
            or _first([f"missing {k}" for k in missing])
            or _first([f"unexpected {k}" for k in unexpected])
        )
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match the model built from {built_from}: {len(missing)} "
            f"missing, {len(unexpected)} unexpected, {len(shapes)} shape mismatches{first}"
        )
    try:
        module.load_state_dict(tensors)
    except (RuntimeError, ValueError, TypeError) as e:
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot load its {entry!r} entry: {line}") from None


def load_entry(load: Any, state: Any, path: str | Path, entry: str) -> None:
    """`load(state)` for an optimiser's or other component's `load_state_dict`; its errors (a group of
    another size, a missing key) become a one-line CheckpointError naming the entry."""
    try:
        load(state)
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as e:
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r}: its {entry!r} entry does not fit this run ({line}); resume with the "
            "config it was written with"
        ) from None
