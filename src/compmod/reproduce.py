"""`compmod reproduce TABLE --scale S`: the grid of one of the paper's tables as a resumable sweep.

Tables (Guo et al., AAAI 2024): `lambda` (Table 6, lambda1 x lambda2), `fusion` (Table 7, fusion strategy x
bi-level on/off), `augment` (Table 4, augmentation sets with and without CompMod), `methods` (Table 1's
methods with and without CompMod). Scales: `smoke` (a few steps on Fashion-MNIST, what CI runs), `cpu`
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
    grid: tuple[str, ...]  # sweep axes, "key=[values]"
    overrides: tuple[str, ...] = ()  # fixed for every cell


_OPS = ("crop", "flip", "jitter", "grayscale", "blur")  # Table 4 adds one at a time
OPS = "[" + ", ".join("[" + ", ".join(_OPS[:n]) + "]" for n in range(1, len(_OPS) + 1)) + "]"

TABLES: dict[str, TableSpec] = {
    "lambda": TableSpec(
        "Table 6: lambda1 (L_mcr) x lambda2 (L_comp)",
        ("compmod.lambda1=[0.1, 1, 10]", "compmod.lambda2=[0.1, 1, 10]"),
        ("compmod.enabled=true",),
    ),
    "fusion": TableSpec(
        "Table 7: fusion strategy x bi-level update (jvp) or none (off)",
        ("compmod.fusion=[concat_h, concat_z, mixup_h]", "compmod.meta.mode=[jvp, off]"),
        ("compmod.enabled=true",),
    ),
    "augment": TableSpec(
        "Table 4: augmentation sets, without and with CompMod",
        (f"augment.ops={OPS}", "compmod.enabled=[false, true]"),
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
    return run_sweep(None, items, Grid.from_items(list(spec.grid)), out, metric="knn_top1", **sweep_options)
