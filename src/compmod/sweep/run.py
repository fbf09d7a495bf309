"""Run every cell of a grid as its own run directory, skipping finished cells, then tabulate and plot."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compmod.config import load_config
from compmod.config.schema import Config
from compmod.engine.trainer import checkpoint_path
from compmod.errors import ConfigError
from compmod.sweep.grid import Grid, value_label
from compmod.sweep.launch import LaunchOptions, launch_cells, wait_for

Runner = Callable[[Config, bool], dict[str, Any]]  # (config, resume) -> results
# A base config, or a function of a cell's overrides giving its base config (reproduce --scale paper)
Base = str | Path | None | Callable[[list[str]], str | Path]


@dataclass
class SweepResult:
    grid: Grid
    results: dict[str, dict[str, Any]]  # cell name -> results.json
    table: Path | None  # None: cell jobs are still running (a launcher without waiting)
    figure: Path | None
    ran: list[str]  # cells run (or resumed) by this call
    seconds: float


def _default_runner(cfg: Config, resume: bool) -> dict[str, Any]:
    from compmod.engine.run import train_and_evaluate

    return train_and_evaluate(cfg, resume=resume, overwrite=not resume)


def run_sweep(
    base: Base,
    overrides: list[str],
    grid: Grid,
    out_dir: str | Path,
    metric: str = "knn_top1",
    runner: Runner = _default_runner,
    log: Callable[[str], None] = print,
    launch: LaunchOptions | None = None,
) -> SweepResult:
    """Each cell = `base` config (or `base(cell overrides)`) <- `overrides` <- the cell's values, in
    `<out_dir>/<cell name>`. A cell whose `results.json` exists is skipped; one with a checkpoint but no
    results is resumed. Writes
    `<out_dir>/sweep.md` (a table of `metric`, and of every cell's results) and, for 1 or 2 axes,
    `<out_dir>/sweep.png` (bar chart or heatmap)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cells = grid.cells()
    configs = {}
    for cell in cells:  # validate every cell before running any
        name = grid.cell_name(cell)
        items = [*overrides, *grid.overrides(cell)]
        cell_base = base(items) if callable(base) else base
        run_dir = [
            f"train.run_dir={out / name}",
            "train.run_dir_mode=exact",
        ]  # the sweep resumes cells itself
        configs[name] = load_config(cell_base, [*items, *run_dir])
    results: dict[str, dict[str, Any]] = {}
    ran = []
    if launch is not None:  # each unfinished cell as its own job (sweep/launch.py)
        ran, complete = _launch(configs, out, launch, log)
        if not complete:
            return SweepResult(grid, {}, None, None, ran, time.perf_counter() - t0)
    for i, (name, cfg) in enumerate(configs.items()):
        done = out / name / "results.json"
        if done.is_file():
            if name not in ran:
                log(f"[{i + 1}/{len(configs)}] {name}: done, skipped")
        else:
            resume = checkpoint_path(out / name).is_file()
            log(f"[{i + 1}/{len(configs)}] {name}: {'resuming' if resume else 'running'}")
            runner(cfg, resume)
            ran.append(name)
        results[name] = json.loads(done.read_text())
        if metric not in results[name]:
            have = ", ".join(sorted(results[name]))
            raise ConfigError(f"sweep metric {metric!r} is not in the results of {name} ({have})")
    table = _write_table(out / "sweep.md", grid, results, metric, base, overrides)
    figure = _write_figure(out / "sweep.png", grid, results, metric)
    return SweepResult(grid, results, table, figure, ran, time.perf_counter() - t0)


def _launch(
    configs: dict[str, Config], out: Path, launch: LaunchOptions, log: Callable[[str], None]
) -> tuple[list[str], bool]:
    """Submit the unfinished cells as jobs (and wait for them unless `launch.wait` is off); the cells
    submitted, and whether every cell now has results."""
    pending = {n: c for n, c in configs.items() if not (out / n / "results.json").is_file()}
    jobs = launch_cells(pending, out, launch, log) if pending else []
    if not launch.wait:
        return [name for name, _ in jobs], False
    wait_for(jobs, launch, log)
    missing = [n for n in configs if not (out / n / "results.json").is_file()]
    if missing:  # jobs of an earlier call, still running
        log(f"{len(missing)} cells have no results yet ({', '.join(missing)}): run the sweep again later")
    return [name for name, _ in jobs], not missing


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _write_table(
    path: Path, grid: Grid, results: dict[str, dict[str, Any]], metric: str, base: Any, overrides: list[str]
) -> Path:
    lines = [
        f"# Sweep: {metric}",
        "",
        ("Base config: compmod's defaults" if base is None else f"Base config: `{base}`")
        + (f", with `{' '.join(overrides)}`" if overrides else ""),
        "",
    ]
    if len(grid.axes) == 2:
        (k1, v1), (k2, v2) = grid.axes
        lines += [
            f"| {k1} \\ {k2} | " + " | ".join(value_label(v) for v in v2) + " |",
            "|---" * (len(v2) + 1) + "|",
        ]
        for a in v1:
            row = [_fmt(results[grid.cell_name({k1: a, k2: b})][metric]) for b in v2]
            lines.append(f"| {value_label(a)} | " + " | ".join(row) + " |")
        lines.append("")
    keys = sorted({k for r in results.values() for k in r if isinstance(r[k], int | float)})
    lines += ["| " + " | ".join([*grid.keys, *keys]) + " |", "|---" * (len(grid.keys) + len(keys)) + "|"]
    for cell in grid.cells():
        r = results[grid.cell_name(cell)]
        lines.append(
            "| "
            + " | ".join([*(value_label(v) for v in cell.values()), *(_fmt(r.get(k, "")) for k in keys)])
            + " |"
        )
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def _write_figure(path: Path, grid: Grid, results: dict[str, dict[str, Any]], metric: str) -> Path | None:
    if len(grid.axes) > 2:
        return None
    from compmod.report.heatmap import bar_chart, heatmap

    if len(grid.axes) == 1:
        ((k, values),) = grid.axes
        heights = [results[grid.cell_name({k: v})][metric] for v in values]
        return bar_chart(path, [value_label(v) for v in values], heights, xlabel=k, ylabel=metric)
    (k1, v1), (k2, v2) = grid.axes
    grid_values = [[results[grid.cell_name({k1: a, k2: b})][metric] for b in v2] for a in v1]
    return heatmap(
        path, grid_values, [value_label(v) for v in v1], [value_label(v) for v in v2], k1, k2, metric
    )
