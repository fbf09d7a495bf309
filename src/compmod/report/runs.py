"""A run directory read back: its config, step and epoch records of `metrics.jsonl`, and `results.json`.

What the Trainer writes (see `compmod.engine.trainer`): `config.yaml`, `metrics.jsonl` with one record per
logged step (`step`, `epoch`, `lr`, `loss` and the loss parts: `ssl`, CompMod's `mcr`, `comp`, `lambda`,
`hypergrad_norm`) and one summary per epoch (`epoch_<part>` means, `images_per_s`, `epoch_time_s`, and any
per-epoch diagnostics such as `epoch_knn_top1` or `epoch_h_effective_rank`), and, after evaluation,
`results.json`. A directory is a run when it holds `config.yaml` and `metrics.jsonl`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compmod.config.yaml_loader import load_yaml
from compmod.errors import CheckpointError, DataError

NOT_PARTS = ("step", "epoch", "lr")
"""Keys of a step record that are not loss parts."""
COMPMOD_TERMS = ("mcr", "comp")
"""CompMod's loss terms (L_mcr, L_comp), shown on their own panel."""
COMPMOD_CONTROLS = ("lambda", "hypergrad_norm")
"""CompMod's MEC lambda schedule and the meta step's hypergradient norm, shown on a third panel."""
EPOCH_BOOKKEEPING = ("epoch_time_s",)
"""`epoch_*` keys that are neither loss parts nor representation diagnostics."""


@dataclass(frozen=True)
class Run:
    """One run directory, read back.

    Attributes:
        path: the run directory.
        config: the resolved config as saved (`config.yaml`), a plain nested dict.
        steps: step records in step order (one per logged step; a step logged twice keeps its last record).
        epochs: epoch summaries in epoch order (records of the same epoch merged, later keys winning).
        results: `results.json`, or {} when the run was not evaluated (yet).
    """

    path: Path
    config: dict[str, Any]
    steps: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    results: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        """The method label: `simclr`, or `simclr+compmod` with CompMod attached."""
        if isinstance(self.results.get("method"), str):
            return self.results["method"]
        method = self.config.get("method") or {}
        compmod = self.config.get("compmod") or {}
        name = method.get("name", "?") if isinstance(method, dict) else "?"
        enabled = isinstance(compmod, dict) and compmod.get("enabled") is True
        return str(name) + ("+compmod" if enabled else "")

    @property
    def dataset(self) -> str | None:
        data = self.config.get("data") or {}
        value = self.results.get("dataset") or (data.get("name") if isinstance(data, dict) else None)
        return str(value) if value is not None else None

    @property
    def loss_parts(self) -> list[str]:
        """Numeric keys of the step records other than step/epoch/lr, in order of first appearance."""
        return _numeric_keys(self.steps, exclude=NOT_PARTS)

    @property
    def epoch_keys(self) -> list[str]:
        """All `epoch_*` keys of the epoch records, in order of first appearance."""
        return [k for k in _numeric_keys(self.epochs, exclude=()) if k.startswith("epoch_")]

    @property
    def accuracy_keys(self) -> list[str]:
        """Per-epoch accuracies: the monitor's kNN (`epoch_*knn*`, e.g. `epoch_knn_top1`) and the online
        linear probe's (`epoch_online_linear_top1`)."""
        return [k for k in self.epoch_keys if "knn" in k or k == "epoch_online_linear_top1"]

    @property
    def diagnostic_keys(self) -> list[str]:
        """Per-epoch diagnostics: `epoch_*` keys that are not the mean of a loss part, a kNN accuracy or
        bookkeeping or an accuracy (e.g. `epoch_h_effective_rank`, `epoch_z_coding_rate`)."""
        means = {f"epoch_{p}" for p in [*self.loss_parts, "loss"]}
        return [
            k
            for k in self.epoch_keys
            if k not in means and k not in EPOCH_BOOKKEEPING and k not in self.accuracy_keys
        ]

    def step_series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of `key` over the step records that have it."""
        return _series(self.steps, "step", key)

    def epoch_series(self, key: str) -> tuple[list[int], list[float]]:
        """(epochs, values) of `key` over the epoch records that have it."""
        return _series(self.epochs, "epoch", key)

    def last_epoch_value(self, key: str) -> float | None:
        _, values = self.epoch_series(key)
        return values[-1] if values else None


def load_run(path: str | Path) -> Run:
    """Read the run directory `path`. Not a run (missing, or without `config.yaml` / `metrics.jsonl`):
    CheckpointError naming the path; a file there that cannot be parsed: DataError naming the file.
    Torn lines of `metrics.jsonl` (a process killed while writing) are skipped."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{str(path)!r} is not a run directory: no such directory")
    missing = [f for f in ("config.yaml", "metrics.jsonl") if not (path / f).is_file()]
    if missing:
        raise CheckpointError(
            f"{str(path)!r} is not a compmod run directory: it has no {' and no '.join(missing)} "
            "(`compmod train` writes both into train.run_dir)"
        )
    config = _read_config(path / "config.yaml")
    steps, epochs = _read_metrics(path / "metrics.jsonl")
    results = _read_results(path / "results.json")
    return Run(path, config, steps, epochs, results)


def display_names(runs: Sequence[Run]) -> list[str]:
    """The shortest path suffix that tells each run apart: `seed0`, or `simclr/seed0` for the runs whose
    directory names repeat."""
    parts = [r.path.resolve().parts for r in runs]
    depth = [1] * len(runs)
    while True:
        names = ["/".join(p[-k:]) for p, k in zip(parts, depth, strict=True)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(parts[i])]
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


def slug(name: str) -> str:
    """A file-name-safe form of a display name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_.") or "run"


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(f"{str(path)!r} must hold a mapping of config sections, got {type(data).__name__}")
    return data


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split the records into step records (keyed by step) and epoch summaries (keyed by epoch): a record
    with an `epoch_*` key is an epoch summary."""
    steps: dict[int, dict[str, Any]] = {}
    epochs: dict[int, dict[str, Any]] = {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line
        if not isinstance(record, dict):
            continue
        if any(isinstance(k, str) and k.startswith("epoch_") for k in record):
            epoch = int(record.get("epoch", len(epochs) + 1))
            epochs.setdefault(epoch, {}).update(record)
        else:
            steps[step] = record
    return [steps[k] for k in sorted(steps)], [epochs[k] for k in sorted(epochs)]


def _read_results(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{str(path)!r} must hold a JSON object, got {type(data).__name__}")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _numeric_keys(records: list[dict[str, Any]], exclude: Sequence[str]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in exclude and _is_number(v):
                keys.setdefault(k, None)
    return list(keys)


def _series(records: list[dict[str, Any]], x_key: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if _is_number(v) and math.isfinite(v) and _is_number(r.get(x_key)):
            xs.append(int(r[x_key]))
            ys.append(float(v))
    return xs, ys
