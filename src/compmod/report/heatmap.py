"""Sweep figures: a heatmap of a metric over two axes, a bar chart over one (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def heatmap(
    path: str | Path,
    values: Sequence[Sequence[float]],
    rows: Sequence[str],
    cols: Sequence[str],
    row_label: str,
    col_label: str,
    title: str,
) -> Path:
    """`values[i][j]` at row `rows[i]`, column `cols[j]`, each cell annotated with its value."""
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(cols), 1.0 + 0.8 * len(rows)))
    try:
        im = ax.imshow(values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(cols)), labels=list(cols))
        ax.set_yticks(range(len(rows)), labels=list(rows))
        ax.set_xlabel(col_label)
        ax.set_ylabel(row_label)
        ax.set_title(title)
        lo, hi = min(map(min, values)), max(map(max, values))
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                dark = hi > lo and (v - lo) / (hi - lo) < 0.5
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if dark else "black")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return Path(path)


def bar_chart(
    path: str | Path, labels: Sequence[str], heights: Sequence[float], xlabel: str, ylabel: str
) -> Path:
    fig, ax = plt.subplots(figsize=(1.5 + 1.0 * len(labels), 3.5))
    try:
        bars = ax.bar(range(len(labels)), heights)
        ax.bar_label(bars, fmt="%.2f")
        ax.set_xticks(range(len(labels)), labels=list(labels), rotation=20, ha="right")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return Path(path)
