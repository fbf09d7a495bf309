"""Grids of runs (`compmod sweep`): the paper's lambda1 x lambda2, augmentation-set and fusion x meta-mode
tables as one resumable command writing a markdown table and a heatmap."""

from typing import Any

from compmod.sweep.launch import LAUNCHERS, LaunchOptions

__all__ = ["LAUNCHERS", "Grid", "LaunchOptions", "SweepResult", "parse_axis", "run_sweep"]


def __getattr__(name: str) -> Any:
    """The grid and the runner on first use: they import the config and the engine (torch), which the
    command line's parser, adding the launcher options from `compmod.sweep.launch`, does not need."""
    if name in ("Grid", "parse_axis"):
        from compmod.sweep import grid

        return getattr(grid, name)
    if name in ("run_sweep", "SweepResult"):
        from compmod.sweep import run

        return getattr(run, name)
    raise AttributeError(f"module 'compmod.sweep' has no attribute {name!r}")
