"""Grids of runs (`compmod sweep`): the paper's lambda1 x lambda2, augmentation-set and fusion x meta-mode
tables as one resumable command writing a markdown table and a heatmap."""

from compmod.sweep.grid import Grid, parse_axis
from compmod.sweep.run import SweepResult, run_sweep

__all__ = ["Grid", "SweepResult", "parse_axis", "run_sweep"]
