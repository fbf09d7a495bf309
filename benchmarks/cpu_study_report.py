"""The tables and learning curves of `benchmarks.cpu_study`, from whatever cells have finished so far."""

from __future__ import annotations

import json
import platform
import shlex
import statistics
from pathlib import Path

import torch

from benchmarks.cpu_study import (
    EPOCHS,
    EVERY,
    EVERY_CHECK,
    METHODS,
    SEEDS,
    STUDY,
    TUNE_EPOCHS,
    VARIANTS,
    best_cell,
    everything,
    resolved,
    results,
)

OUT = Path("benchmarks/results/cpu_study.md")
CURVES = Path("docs/img/cpu_study_curves.png")


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "pending"
    if len(values) == 1:
        return f"{values[0]:.2f} (one seed so far)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _column(out: Path, key: str) -> list[float]:
    cells = results(out)
    return [cells[f"seed={s}"][key] for s in SEEDS if f"seed={s}" in cells and key in cells[f"seed={s}"]]


def tuning_lines() -> list[str]:
    lines = [
        f"### Tuning on the validation split ({TUNE_EPOCHS} epochs, seed 0, 5-NN top-1 % on 6,000 held-out "
        "training images)",
        "",
        "| method | variant | cells (value: 5-NN) | chosen |",
        "|---|---|---|---|",
    ]
    for m in METHODS:
        for v in VARIANTS:
            out = STUDY / "tune" / m / v
            cells = results(out)
            text = ", ".join(f"{name}: {r['knn_top1']:.2f}" for name, r in cells.items()) or "pending"
            pick = best_cell(out)["cell"] if len(cells) == 4 else "pending"
            lines.append(f"| {m} | {v} | {text} | {pick} |")
    return lines


def every_lines() -> list[str]:
    """Stage 5: validation 5-NN and pretraining time of bi-level CompMod by `compmod.meta.every` (every
    `EVERY` is stage 2's chosen cell)."""
    ks = sorted((*EVERY_CHECK, EVERY))
    lines = [
        f"### `compmod.meta.every`, checked after the grid (validation split, {TUNE_EPOCHS} epochs, seed 0, "
        "bi-level CompMod at its chosen rate and lambdas: 5-NN top-1 %, pretraining seconds)",
        "",
        "| method | " + " | ".join(f"every {k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for m in METHODS:
        cells = []
        for k in ks:
            if k == EVERY:
                out = STUDY / "tune" / m / "compmod"
                r = results(out).get(best_cell(out)["cell"]) if results(out) else None
            else:
                r = results(STUDY / "tune" / m / f"compmod_every{k}").get(f"every={k}")
            cells.append(f"{r['knn_top1']:.2f} ({r['train_time_s']:.0f} s)" if r else "pending")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _difference(a: list[float], b: list[float]) -> str:
    """b - a in means, and whether the per-seed ranges overlap."""
    if len(a) < len(SEEDS) or len(b) < len(SEEDS):
        return "pending"
    diff = statistics.mean(b) - statistics.mean(a)
    apart = max(a) < min(b) or max(b) < min(a)
    return f"{diff:+.2f} ({'exceeds' if apart else 'within'} the seed spread)"


def main_lines() -> list[str]:
    lines = [
        f"### Test set, {EPOCHS} epochs on all 60,000 training images, seeds {', '.join(map(str, SEEDS))}",
        "",
        "| method | variant | 5-NN top-1 (%) | linear top-1 (%) | 5-NN − plain | linear − plain | "
        "pretraining wall-clock (s) | time / plain | 5-NN per seed | linear per seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in METHODS:
        plain = STUDY / "main" / m / "plain"
        base_t = _column(plain, "train_time_s")
        every = sorted((STUDY / "main" / m).glob("compmod_every*"))  # stage 6
        rows = [
            *((v, STUDY / "main" / m / v) for v in VARIANTS),
            *((o.name, o) for o in every),
            ("plain, equal wall-clock", STUDY / "equal" / m),
        ]
        for v, out in rows:
            knn, lin, t = (_column(out, k) for k in ("knn_top1", "linear_top1", "train_time_s"))
            ratio = f"{statistics.mean(t) / statistics.mean(base_t):.2f}x" if t and base_t else "pending"
            epochs = {r.get("epochs") for r in results(out).values()}
            label = v + (
                f" ({epochs.pop()} epochs)" if v.startswith("plain, equal") and len(epochs) == 1 else ""
            )
            lines.append(
                f"| {m} | {label} | {_mean_sd(knn)} | {_mean_sd(lin)} | "
                f"{_difference(_column(plain, 'knn_top1'), knn) if v != 'plain' else ''} | "
                f"{_difference(_column(plain, 'linear_top1'), lin) if v != 'plain' else ''} | "
                f"{_mean_sd(t)} | {ratio} | {', '.join(f'{x:.2f}' for x in knn)} | "
                f"{', '.join(f'{x:.2f}' for x in lin)} |"
            )
    return lines


PANELS = (
    ("epoch_knn_top1", "monitor 5-NN top-1 (%)\n(held-out training images)"),
    ("epoch_online_linear_top1", "online linear probe top-1 (%)\n(test set)"),
)


def curves(path: Path = CURVES) -> Path | None:
    """Per epoch, seed 0 of every variant, one column per method: the online monitor's 5-NN (top row) and
    the online linear probe (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(PANELS), len(METHODS), figsize=(4 * len(METHODS), 6), sharey="row")
    drawn = False
    for col, m in enumerate(METHODS):
        for v, out in [
            *((v, STUDY / "main" / m / v) for v in VARIANTS),
            ("plain, equal", STUDY / "equal" / m),
        ]:
            metrics = out / "seed=0" / "metrics.jsonl"
            if not (out / "seed=0" / "results.json").is_file():
                continue
            rows = [json.loads(line) for line in metrics.read_text().splitlines()]
            for ax, (key, _) in zip(axes[:, col], PANELS, strict=True):
                points = [(r["epoch"], r[key]) for r in rows if key in r]
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=v)
                    drawn = True
        axes[0, col].set_title(m)
        axes[-1, col].set_xlabel("epoch")
        axes[-1, col].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, (_, label) in zip(axes[:, 0], PANELS, strict=True):
        ax.set_ylabel(label)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    if drawn:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return path if drawn else None


def write_report(out: Path = OUT) -> Path:
    figure = curves()
    commands = [shlex.join(resolved(s).command()) for s in everything() if (s.out / "sweep.md").is_file()]
    lines = [
        "## cpu_study",
        "",
        f"torch {torch.__version__}, {platform.machine()}, one torch thread per run, two runs at a time. "
        "Produced by `python -m benchmarks.cpu_study run --jobs 2` and `... report`; protocol in the "
        "module docstring of benchmarks/cpu_study.py.",
        "",
        *tuning_lines(),
        "",
        *every_lines(),
        "",
        *main_lines(),
        "",
        "By epoch, seed 0: the online monitor's 5-NN (1,000 held-out training images against 4,000) and "
        "the online linear probe (trained on the pretraining batches, scored on the test set): "
        + (f"![curves](../../{figure})" if figure else "pending"),
        "",
        "Commands of the finished sweeps:",
        "",
        "```",
        *commands,
        "```",
    ]
    out.write_text("\n".join(lines) + "\n")
    return out
