"""Training curves: loss parts of one run over steps; kNN accuracy and diagnostics of many runs over epochs.

Figures are built with matplotlib's object API on the Agg canvas (`Figure` + `FigureCanvasAgg`), never
through pyplot: no GUI backend is touched, no global figure list grows, and nothing is left to close
after `savefig`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from compmod.report.runs import COMPMOD_CONTROLS, COMPMOD_TERMS, Run

LOSS_PANEL = "loss"
TERMS_PANEL = "CompMod terms (mcr, comp)"
CONTROLS_PANEL = "CompMod controls (lambda, hypergrad_norm)"


def new_figure(n_panels: int, ncols: int | None = None, size: tuple[float, float] = (5.0, 3.6)) -> Figure:
    """A figure with an Agg canvas and `n_panels` axes on a grid of `ncols` columns (default: one row
    up to 3 panels, 2 x 2 for 4, 3 columns beyond)."""
    if ncols is None:
        ncols = n_panels if n_panels <= 3 else (2 if n_panels == 4 else 3)
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    for i in range(n_panels):
        fig.add_subplot(nrows, ncols, i + 1)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write `fig` as a PNG at `path` (folders created) and drop its canvas's memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    fig.clear()
    return path


def loss_panels(run: Run) -> list[tuple[str, list[str]]]:
    """(panel title, keys) of the loss figure: the method's loss and parts, then CompMod's terms and
    controls when the run logged them."""
    parts = run.loss_parts
    compmod = set(COMPMOD_TERMS) | set(COMPMOD_CONTROLS)
    panels = [(LOSS_PANEL, [p for p in parts if p not in compmod])]
    terms = [p for p in COMPMOD_TERMS if p in parts]
    controls = [p for p in COMPMOD_CONTROLS if p in parts]
    if terms:
        panels.append((TERMS_PANEL, terms))
    if controls:
        panels.append((CONTROLS_PANEL, controls))
    return [(t, keys) for t, keys in panels if keys]


def loss_figure(run: Run, title: str | None = None) -> Figure:
    """Each loss part of `run` against the optimizer step, one panel per group (`loss_panels`); a panel
    has a log y axis when every value on it is positive."""
    panels = loss_panels(run) or [(LOSS_PANEL, [])]
    fig = new_figure(len(panels))
    for ax, (panel, keys) in zip(fig.axes, panels, strict=True):
        values: list[float] = []
        for key in keys:
            steps, ys = run.step_series(key)
            ax.plot(steps, ys, label=key, linewidth=1.2, marker="." if len(ys) < 30 else None)
            values += ys
        _finish(ax, panel, "step", values)
    fig.suptitle(title or f"{run.label} ({run.name})")
    return fig


def epoch_figure(runs: Sequence[Run], names: Sequence[str], keys: Sequence[str], title: str) -> Figure:
    """One panel per `epoch_*` key, one line per run that logged it (labelled "method label (name)"),
    against the epoch."""
    fig = new_figure(max(1, len(keys)))
    for ax, key in zip(fig.axes, keys, strict=False):
        values: list[float] = []
        for run, name in zip(runs, names, strict=True):
            epochs, ys = run.epoch_series(key)
            if ys:
                ax.plot(epochs, ys, marker="o", linewidth=1.2, label=f"{run.label} ({name})")
                values += ys
        _finish(ax, key.removeprefix("epoch_"), "epoch", values, log=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    return fig


def panel_titles(fig: Figure) -> list[str]:
    """The titles of a figure's panels, in order (what tests and callers check)."""
    return [ax.get_title() for ax in fig.axes]


def save_loss_curves(run: Run, path: str | Path, title: str | None = None) -> tuple[Path, list[str]]:
    """Write the loss figure of `run` to `path`; returns the path and the panel titles."""
    fig = loss_figure(run, title)
    titles = panel_titles(fig)
    return save_figure(fig, path), titles


def save_epoch_curves(
    runs: Sequence[Run], names: Sequence[str], keys: Sequence[str], path: str | Path, title: str
) -> Path:
    return save_figure(epoch_figure(runs, names, keys, title), path)


def _finish(ax: Axes, title: str, xlabel: str, values: list[float], log: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.grid(True, alpha=0.3)
    if log and values and all(v > 0 for v in values):
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no values logged", ha="center", va="center", transform=ax.transAxes)
