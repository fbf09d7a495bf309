"""Markdown comparison tables across runs: results, training facts, final-epoch loss and diagnostics."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from compmod.report.runs import Run

Getter = Callable[[Run], Any]

RESULT_KEYS = ("knn_top1", "knn_weighted_top1", "linear_top1", "linear_top5", "pixel_knn_top1")


def comparison_table(runs: Sequence[Run], names: Sequence[str]) -> str:
    """One row per run: run, method, dataset, backbone, epochs, steps, train time, the accuracies of
    `results.json` (kNN, weighted kNN, linear top-1/5, pixel kNN, any `semi_*`), the final epoch's mean
    loss, and the final epoch's diagnostics and kNN (`epoch_*` keys, see `Run.diagnostic_keys`).
    Values come from `results.json` and fall back to the config and metrics for unevaluated runs.
    Columns with no value in any run are dropped."""
    by_name = dict(zip((id(r) for r in runs), names, strict=True))
    columns: list[tuple[str, Getter]] = [
        ("run", lambda r: by_name[id(r)]),
        ("method", lambda r: r.label),
        ("dataset", lambda r: r.dataset),
        ("backbone", _backbone),
        ("epochs", _epochs),
        ("steps", _steps),
        ("train time (s)", _train_time),
    ]
    columns += [(k, _result(k)) for k in RESULT_KEYS]
    semi = sorted({k for r in runs for k in r.results if k.startswith("semi_")}, key=_natural)
    columns += [(k, _result(k)) for k in semi]
    columns.append(("final epoch loss", lambda r: r.last_epoch_value("epoch_loss")))
    extra = _ordered_union([*r.accuracy_keys, *r.diagnostic_keys] for r in runs)
    columns += [(f"final {k.removeprefix('epoch_')}", _last(k)) for k in extra]
    rows = [[get(r) for _, get in columns] for r in runs]
    return markdown_table([h for h, _ in columns], rows)


def stats_table(stats: Mapping[str, Mapping[str, float]], labels: Mapping[str, str]) -> str:
    """Rows `name -> {stat: value}` (e.g. `representation_stats` per run) as a markdown table with the
    columns run, method and the union of the stat names."""
    keys = _ordered_union(list(s) for s in stats.values())
    rows = [[name, labels.get(name), *(s.get(k) for k in keys)] for name, s in stats.items()]
    return markdown_table(["run", "method", *keys], rows)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; columns empty in every row are dropped; floats to 2 decimals, ints as
    ints, None as an empty cell; `|` in text escaped; numeric columns right-aligned."""
    keep = [j for j in range(len(headers)) if any(row[j] is not None for row in rows)]
    lines = [
        "| " + " | ".join(_cell(headers[j]) for j in keep) + " |",
        "|" + "|".join("---:" if _numeric_column(rows, j) else "---" for j in keep) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row[j]) for j in keep) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _numeric_column(rows: Sequence[Sequence[Any]], j: int) -> bool:
    values = [row[j] for row in rows if row[j] is not None]
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _natural(key: str) -> list[Any]:
    """Sort key putting semi_1pct before semi_10pct."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def _ordered_union(groups: Any) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        for k in group:
            seen.setdefault(k, None)
    return list(seen)


def _result(key: str) -> Getter:
    def get(r: Run) -> Any:
        v = r.results.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    return get


def _last(key: str) -> Getter:
    return lambda r: r.last_epoch_value(key)


def _section(r: Run, name: str) -> dict[str, Any]:
    s = r.config.get(name)
    return s if isinstance(s, dict) else {}


def _backbone(r: Run) -> Any:
    return r.results.get("backbone") or _section(r, "model").get("backbone")


def _epochs(r: Run) -> int | None:
    if isinstance(r.results.get("epochs"), int):
        return int(r.results["epochs"])
    return int(r.epochs[-1]["epoch"]) if r.epochs and "epoch" in r.epochs[-1] else None


def _steps(r: Run) -> int | None:
    if isinstance(r.results.get("steps"), int):
        return int(r.results["steps"])
    return int(r.steps[-1]["step"]) if r.steps else None


def _train_time(r: Run) -> float | None:
    v = r.results.get("train_time_s")
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    _, times = r.epoch_series("epoch_time_s")
    return sum(times) if times else None
