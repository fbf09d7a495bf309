"""`compmod reproduce TABLE --scale S`: the grid of one of the paper's tables as a resumable sweep.

Tables (Guo et al., AAAI 2024), each with the paper's rows and columns: `lambda` (Table 6: lambda1 x lambda2
in [0.001, 0.01, 0.1, 1], SimCLR+), `fusion` (Table 7, BYOL+: mixup with alpha 0.1 ... 0.9, concatenation of
h or of z, and no bi-level update), `augment` (Table 4: its eight augmentation sets x SimCLR+, BYOL+,
Barlow Twins+), `methods` (Table 1's SimCLR, BYOL, Barlow Twins without and with CompMod).
Scales: `smoke` (a few steps on Fashion-MNIST, what CI runs), `cpu`
(the small CNN on 10k Fashion-MNIST images for 2 epochs: minutes per cell on 2 cores, the setting of
docs/results.md). The metric is 5-NN top-1 (`knn_top1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compmod.errors import ConfigError
from compmod.sweep import Grid, SweepResult, run_sweep


@dataclass(frozen=True)
class TableSpec:
    title: str
    grid: tuple[str, ...] = ()  # sweep axes, "key=[values]"
    overrides: tuple[str, ...] = ()  # fixed for every cell
    variants: dict[str, tuple[str, ...]] | None = None  # named rows (a `variant` axis before `grid`)

    def sweep_grid(self) -> Grid:
        return (
            Grid.from_variants(self.variants, *self.grid)
            if self.variants
            else Grid.from_items(list(self.grid))
        )


# Table 4's eight augmentation sets (ID 1-8): horizontal flip, rotate, random crop, random grey, colour jitter
_TABLE4 = (
    ("flip", "rotation"),
    ("crop",),
    ("grayscale",),
    ("jitter",),
    ("flip", "crop"),
    ("rotation", "jitter"),
    ("flip", "crop", "grayscale"),
    ("flip", "rotation", "crop", "grayscale", "jitter"),
)
OPS = "[" + ", ".join("[" + ", ".join(ops) + "]" for ops in _TABLE4) + "]"

TABLES: dict[str, TableSpec] = {
    "lambda": TableSpec(
        "Table 6: lambda1 (L_mcr) x lambda2 (L_comp), SimCLR+",
        ("compmod.lambda1=[0.001, 0.01, 0.1, 1]", "compmod.lambda2=[0.001, 0.01, 0.1, 1]"),
        ("compmod.enabled=true",),
    ),
    "fusion": TableSpec(
        "Table 7: fusion strategy and optimisation, BYOL+",
        overrides=("method.name=byol", "compmod.enabled=true"),
        variants={
            **{
                f"mixup_{a}": ("compmod.fusion=mixup_h", f"compmod.mixup_alpha={a}")
                for a in (0.1, 0.3, 0.5, 0.7, 0.9)
            },
            "concat_h": ("compmod.fusion=concat_h",),  # M(h)
            "concat_z": ("compmod.fusion=concat_z",),  # M(z)
            "no_bilevel": ("compmod.fusion=concat_h", "compmod.meta.mode=off"),
        },
    ),
    "augment": TableSpec(
        "Table 4: augmentation sets (IDs 1-8) x SimCLR+, BYOL+, Barlow Twins+",
        (f"augment.ops={OPS}", "method.name=[simclr, byol, barlow_twins]"),
        ("compmod.enabled=true",),
    ),
    "methods": TableSpec(
        "Table 1: methods without and with CompMod",
        ("method.name=[simclr, byol, barlow_twins]", "compmod.enabled=[false, true]"),
    ),
}

_COMMON = ("train.progress=false", "eval.linear=false", "eval.pixel_knn=false")
SCALES: dict[str, tuple[str, ...]] = {
    "smoke": (
        *_COMMON,
        "data.subset=64",
        "train.batch_size=16",
        "train.max_steps=2",
        "eval.train_subset=500",
        "eval.test_subset=500",
    ),
    "cpu": (
        *_COMMON,
        "data.subset=10000",
        "train.epochs=2",
        "train.batch_size=256",
        "train.optimizer=lars",
        "train.lr=0.5",
        "train.weight_decay=1.0e-5",
        "train.warmup_epochs=0.5",
        "method.proj_hidden_dim=512",
        "method.proj_dim=128",
        "eval.train_subset=10000",
    ),
}


def reproduce(
    table: str,
    scale: str,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    **sweep_options: Any,
) -> SweepResult:
    """Run (or resume) the grid of `table` at `scale` in `out_dir` (default runs/reproduce/<table>-<scale>);
    `overrides` (`--set` items) apply to every cell after the scale's; `sweep_options` go to `run_sweep`."""
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; choose one of: {', '.join(TABLES)}")
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    spec = TABLES[table]
    out = Path(out_dir) if out_dir is not None else Path("runs/reproduce") / f"{table}-{scale}"
    items = [*SCALES[scale], *spec.overrides, *(overrides or [])]
    return run_sweep(None, items, spec.sweep_grid(), out, metric="knn_top1", **sweep_options)
