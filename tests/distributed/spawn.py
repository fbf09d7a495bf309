"""Run a function in N CPU processes joined by a gloo process group, and collect what each returns."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils._pytree import tree_map


def _entry(rank: int, fn: Callable[..., Any], world: int, tmp: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    try:
        out = fn(*args)
        # clone: torch.save writes a view's whole storage (a hypergradient that views one flat buffer made
        # each rank's file ~0.9 GB)
        out = tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, out)
        torch.save(out, Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable[..., Any], tmp: Path, *args: Any, world: int = 2) -> list[Any]:
    """fn(*args) in `world` spawned processes (rank r's result at index r). fn must be importable (a
    module-level function) and return tensors / containers of tensors and numbers."""
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_entry, args=(fn, world, str(tmp), args), nprocs=world, start_method="spawn")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(world)]


def run_jobs(jobs: dict[str, tuple[Callable[..., Any], tuple]]) -> dict[str, Any]:
    """{name: fn(*args)} for each job, in order: several tests' rank computations in one spawn (each spawn
    starts `world` interpreters, ~3 s of CPU each, the bulk of a small test's time)."""
    return {name: fn(*args) for name, (fn, args) in jobs.items()}
