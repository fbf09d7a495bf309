"""Which run directory a run writes, whether it continues the run found there, and the lock held on it.

`train.run_dir_mode`:

* ``exact`` (default): the run writes `train.run_dir`. The Trainer refuses a directory that holds a run
  (a checkpoint or `results.json`) unless `--resume` continues it or `--overwrite` starts over.
* ``auto`` (`configs/demo.yaml`, so `make demo` works when typed again): the first of `run_dir`,
  `run_dir-2`, `run_dir-3`, ... that is neither finished (holds `results.json`) nor in use by another
  process. If it holds an unfinished run (a checkpoint, no results) whose saved config is this one
  (apart from `train.run_dir`), that run is continued; one with another config is left alone too.

Every run holds `<run_dir>/.lock` (rank 0, `RunDirLock`) from before its first file is written until its
results are, so two processes never write one directory; a directory in use is an error naming the holder
in ``exact`` mode and skipped in ``auto`` mode (single process).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from compmod.config.load import apply_override, config_from_dict, config_to_dict
from compmod.config.schema import Config
from compmod.engine.checkpoint import load_checkpoint
from compmod.engine.checkpoint_content import saved_config
from compmod.engine.run_lock import RunDirLock
from compmod.errors import CheckpointError, CompmodError

RESULTS_FILE = "results.json"
Status = Literal["free", "unfinished", "finished"]


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def run_status(run_dir: str | Path) -> Status:
    """finished: holds results.json; unfinished: a checkpoint without results; free: neither."""
    if (Path(run_dir) / RESULTS_FILE).is_file():
        return "finished"
    return "unfinished" if checkpoint_path(run_dir).is_file() else "free"


def check_start(run_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Raise CheckpointError unless a run may start in `run_dir`: `resume` needs its checkpoint; without
    `resume` or `overwrite` it must hold no run (no checkpoint, no results.json), so no work is lost."""
    run_dir, ckpt = Path(run_dir), checkpoint_path(run_dir)
    if resume and not ckpt.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {str(ckpt)!r}; start without --resume")
    if resume or overwrite:
        return
    if ckpt.is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} already holds a checkpoint; pass --resume to continue it, "
            "--overwrite to start over, or choose another train.run_dir"
        )
    if (run_dir / RESULTS_FILE).is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} already holds a finished run ({RESULTS_FILE}); choose another "
            "train.run_dir, set train.run_dir_mode=auto for a new directory per run, or pass --overwrite"
        )


def with_run_dir(cfg: Config, run_dir: str | Path) -> Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_dir=str(run_dir)))


def resumed_config(cfg: Config, overrides: Sequence[str] = ()) -> Config:
    """What `compmod train --resume` runs: the config saved in `cfg.train.run_dir`'s checkpoint, then
    `overrides`; the run directory stays `cfg.train.run_dir` (the one the user named), whatever the
    checkpoint says, so a checkpoint copied from another run never writes into that run."""
    check_start(cfg.train.run_dir, resume=True, overwrite=False)
    path = checkpoint_path(cfg.train.run_dir)
    raw = saved_config(load_checkpoint(path), path)
    for item in overrides:
        apply_override(raw, item)
    return with_run_dir(config_from_dict(raw), cfg.train.run_dir)


@dataclass
class RunPlan:
    """The run directory chosen (in `cfg.train.run_dir`), whether the run there is continued, the lock held
    on it (None on ranks other than 0) and `note`, a line saying why this directory ('' when it is simply
    the one asked for). A context manager that releases the lock."""

    cfg: Config
    resume: bool
    lock: RunDirLock | None
    note: str = ""

    def __enter__(self) -> RunPlan:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.lock is not None:
            self.lock.release()


def is_rank0() -> bool:
    """Rank 0 of a torchrun launch, or the only process (read from RANK: usable before the process group
    is initialised)."""
    return int(os.environ.get("RANK", "0")) == 0


def _single_process() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1


def open_run(cfg: Config, resume: bool = False, overwrite: bool = False) -> RunPlan:
    """Choose the run directory (`train.run_dir_mode`; `resume` and `overwrite` mean ``exact``) and lock
    it. Raises RunDirBusyError when the directory is in use (``exact``)."""
    if resume or overwrite or cfg.train.run_dir_mode == "exact":
        lock = RunDirLock(cfg.train.run_dir).acquire() if is_rank0() else None
        return RunPlan(cfg, resume, lock)
    skipped: list[str] = []
    for run_dir in _candidates(cfg.train.run_dir):
        if run_status(run_dir) == "finished":
            skipped.append(f"{run_dir} holds a finished run")
            continue
        lock = RunDirLock(run_dir) if is_rank0() else None
        if lock is not None and not lock.try_acquire():
            if not _single_process():  # every rank must choose the same directory: no skipping
                lock.acquire()
            skipped.append(f"{run_dir} is in use by {lock.holder()}")
            continue
        plan = _plan_in(cfg, run_dir, lock, skipped)
        if plan is not None:
            return plan
        if lock is not None:
            lock.release()
    raise AssertionError("unreachable: the candidates never end")  # pragma: no cover


def _plan_in(cfg: Config, run_dir: Path, lock: RunDirLock | None, skipped: list[str]) -> RunPlan | None:
    """The plan for `run_dir` (locked when `lock` is given), or None after adding to `skipped` why not."""
    status = run_status(run_dir)  # again, now that no other process can change it
    if status == "finished":
        skipped.append(f"{run_dir} holds a finished run")
        return None
    target = with_run_dir(cfg, run_dir)
    if status == "free":
        return RunPlan(target, False, lock, "; ".join(["a new run", *skipped]) if skipped else "")
    saved, reason = _saved_run(run_dir)
    if saved is None or config_to_dict(saved) != config_to_dict(target):
        skipped.append(
            f"{run_dir} holds an unfinished run {reason if saved is None else 'with another config'}"
        )
        return None
    return RunPlan(
        target, True, lock, "; ".join([f"continuing the unfinished run there from {reason}", *skipped])
    )


def _saved_run(run_dir: Path) -> tuple[Config | None, str]:
    """(the config saved in run_dir's checkpoint with run_dir as its run directory, "epoch E, step S"), or
    (None, why it cannot be continued)."""
    path = checkpoint_path(run_dir)
    try:
        state = load_checkpoint(path)
        saved = with_run_dir(config_from_dict(saved_config(state, path)), run_dir)
    except CompmodError as e:
        return None, f"that cannot be continued ({e})"
    return saved, f"epoch {state.get('epoch')}, step {state.get('step')}"


def _candidates(run_dir: str) -> Iterator[Path]:
    base = run_dir.rstrip("/") or run_dir
    yield Path(run_dir)
    for i in itertools.count(2):
        yield Path(f"{base}-{i}")
