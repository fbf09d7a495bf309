"""`compmod reproduce TABLE --scale S`: the grid of one of the paper's tables as a resumable sweep.

Tables (Guo et al., AAAI 2024), each with the paper's rows and columns: `lambda` (Table 6: lambda1 x lambda2
in [0.001, 0.01, 0.1, 1], SimCLR+), `fusion` (Table 7, BYOL+: mixup with alpha 0.1 ... 0.9, concatenation of
h or of z, and no bi-level update), `augment` (Table 4: its eight augmentation sets x SimCLR+, BYOL+,
Barlow Twins+), `methods` (Table 1's SimCLR, BYOL, Barlow Twins without and with CompMod).
Scales: `smoke` (a few steps on Fashion-MNIST, what CI runs), `cpu` (the small CNN on 10k Fashion-MNIST
images for 2 epochs: minutes per cell on 2 cores, the setting of docs/results.md), both scored by 5-NN top-1
(`knn_top1`); and `paper`, where each cell starts from the paper preset of its method and dataset
(configs/paper/<dataset>/<method>[+compmod].yaml: ResNet-18, the full epochs and recipe; the paper's ablations
use CIFAR-10) and is scored, as the paper's Tables 4, 6 and 7 are, by the linear probe (`linear_top1`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compmod.config.yaml_loader import load_yaml
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


@dataclass(frozen=True)
class Scale:
    overrides: tuple[str, ...]
    metric: str = "knn_top1"
    presets: bool = False  # each cell's base config is its paper preset (PaperPreset)


_COMMON = ("train.progress=false", "eval.linear=false", "eval.pixel_knn=false")
SCALES: dict[str, Scale] = {
    "smoke": Scale(
        (
            *_COMMON,
            "data.subset=64",
            "train.batch_size=16",
            "train.max_steps=2",
            "eval.train_subset=500",
            "eval.test_subset=500",
        )
    ),
    "cpu": Scale(
        (
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
        )
    ),
    "paper": Scale(("eval.pixel_knn=false",), metric="linear_top1", presets=True),
}
PAPER_DATASET = "cifar10"  # the dataset of the paper's ablations (Tables 4, 6, 7)


def presets_dir() -> Path:
    """configs/paper under the working directory, else under the source checkout compmod runs from."""
    here = [Path("configs/paper"), Path(__file__).resolve().parents[2] / "configs" / "paper"]
    for d in here:
        if d.is_dir():
            return d
    raise ConfigError(
        "--scale paper needs the paper presets (configs/paper/<dataset>/<method>[+compmod].yaml); looked in "
        + " and ".join(str(d.resolve()) for d in here)
        + ". Run from a checkout of the compmod repository."
    )


@dataclass(frozen=True)
class PaperPreset:
    """The base config of one cell at --scale paper: <presets>/<dataset>/<method>[+compmod].yaml, the method
    and CompMod switch read from the cell's overrides (the last `method.name=` / `compmod.enabled=` wins)."""

    root: Path
    dataset: str

    def __call__(self, items: list[str]) -> Path:
        method, compmod = "simclr", False
        for item in items:
            key, _, value = item.partition("=")
            if key.strip() == "method.name":
                method = str(load_yaml(value))
            elif key.strip() == "compmod.enabled":
                compmod = load_yaml(value) is True
        path = self.root / self.dataset / f"{method}{'+compmod' if compmod else ''}.yaml"
        if not path.is_file():
            have = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*.yaml"))
            raise ConfigError(f"no paper preset {path} for this cell; the presets are: {', '.join(have)}")
        return path

    def __str__(self) -> str:
        return f"{self.root}/{self.dataset}/<method>[+compmod].yaml"


def reproduce(
    table: str,
    scale: str,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    dataset: str | None = None,
    **sweep_options: Any,
) -> SweepResult:
    """Run (or resume) the grid of `table` at `scale` in `out_dir` (default runs/reproduce/<table>-<scale>,
    or <table>-paper-<dataset>); `overrides` (`--set` items) apply to every cell after the scale's; `dataset`
    picks the presets' dataset at --scale paper (default cifar10); `sweep_options` go to `run_sweep`."""
    if table not in TABLES:
        raise ConfigError(f"unknown table {table!r}; choose one of: {', '.join(TABLES)}")
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    spec, sc = TABLES[table], SCALES[scale]
    base: PaperPreset | None = None
    name = f"{table}-{scale}"
    if sc.presets:
        root = presets_dir()
        datasets = sorted(d.name for d in root.iterdir() if d.is_dir())
        dataset = dataset or PAPER_DATASET
        if dataset not in datasets:
            raise ConfigError(
                f"no paper presets for dataset {dataset!r}; choose one of: {', '.join(datasets)}"
            )
        base, name = PaperPreset(root, dataset), f"{table}-{scale}-{dataset}"
    elif dataset is not None:
        raise ConfigError(
            f"--dataset {dataset} applies to --scale paper only; --scale {scale} runs on Fashion-MNIST"
        )
    out = Path(out_dir) if out_dir is not None else Path("runs/reproduce") / name
    items = [*sc.overrides, *spec.overrides, *(overrides or [])]
    return run_sweep(base, items, spec.sweep_grid(), out, metric=sc.metric, **sweep_options)
