"""A sweep grid: named config keys, each with a list of values; its cells and their directory names."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from compmod.config.yaml_loader import load_yaml
from compmod.errors import ConfigError


def parse_axis(item: str) -> tuple[str, list[Any]]:
    """ "compmod.lambda1=[0.1, 1, 10]" -> ("compmod.lambda1", [0.1, 1, 10]). The values are a YAML list
    (each value may itself be a list, e.g. augment.ops=[[crop, flip], [crop, flip, jitter]])."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"sweep axis {item!r} must look like section.key=[value1, value2, ...]")
    try:
        values = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"sweep axis {item!r}: the values are not valid YAML ({str(e).splitlines()[0]})"
        ) from None
    if not isinstance(values, list) or not values:
        raise ConfigError(
            f"sweep axis {key}: expected a non-empty list of values like [0.1, 1, 10], got {text!r}"
        )
    if len({yaml.safe_dump(v) for v in values}) != len(values):
        raise ConfigError(f"sweep axis {key}: the values {values} repeat")
    return key, values


def value_label(value: Any) -> str:
    """A short, filesystem-safe label of one value: 0.1 -> "0.1", [crop, flip] -> "crop+flip"."""
    if isinstance(value, list):
        return "+".join(value_label(v) for v in value) or "none"
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9.+_-]", "_", text)


VARIANT = "variant"  # the axis of a list of named variants


@dataclass
class Grid:
    """Axes in order; cells are the cartesian product, the last axis varying fastest.

    An axis named `variant` lists named sets of overrides (`variants`): tables whose rows are not a
    product of values, such as the paper's Table 7 (mixup alphas, two concatenations, no bi-level)."""

    axes: list[tuple[str, list[Any]]] = field(default_factory=list)
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_variants(cls, variants: dict[str, tuple[str, ...]], *items: str) -> Grid:
        """A `variant` axis over the names of `variants`, then the axes of `items`."""
        grid = cls.from_items(list(items)) if items else cls()
        for name in variants:
            if value_label(name) != name:
                raise ConfigError(f"sweep variant name {name!r}: use letters, digits and . + _ - only")
        return cls([(VARIANT, list(variants)), *grid.axes], dict(variants))

    @classmethod
    def from_items(cls, items: list[str]) -> Grid:
        axes = [parse_axis(item) for item in items]
        keys = [k for k, _ in axes]
        if not axes:
            raise ConfigError("a sweep needs at least one --grid section.key=[values]")
        if len(set(keys)) != len(keys):
            raise ConfigError(f"sweep: an axis is given twice in {keys}")
        return cls(axes)

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.axes]

    def cells(self) -> list[dict[str, Any]]:
        return [
            dict(zip(self.keys, combo, strict=True))
            for combo in itertools.product(*(v for _, v in self.axes))
        ]

    def cell_name(self, cell: dict[str, Any]) -> str:
        """e.g. "lambda1=0.1,lambda2=10": the last part of each key and its value label."""
        return ",".join(f"{k.rsplit('.', 1)[-1]}={value_label(v)}" for k, v in cell.items())

    def overrides(self, cell: dict[str, Any]) -> list[str]:
        """The cell as `--set` items (values dumped as inline YAML; a variant as its own items)."""
        named = list(self.variants[cell[VARIANT]]) if VARIANT in cell else []
        return named + [
            f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in cell.items()
            if k != VARIANT
        ]
