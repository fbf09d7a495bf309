"""Metrics sinks: `metrics.jsonl` in the run directory, optionally TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compmod.errors import ConfigError


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """Drop the records of steps after `last_step` from `<run_dir>/metrics.jsonl` (atomically): a run
    resumed from the checkpoint of `last_step` logs those steps again."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= last_step]  # type: ignore[operator]
    if len(kept) == len(lines):
        return
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def _step_of(line: str) -> int | None:
    """The step of one record, or None for a torn line (a process killed while writing it)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class MetricsLogger:
    """Appends one JSON object per call to `<run_dir>/metrics.jsonl`; mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = False) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1)
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError(
                    "config key train.tensorboard: true needs the tensorboard package; "
                    "install it with pip install 'compmod[tensorboard]'"
                ) from None
            self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, record: dict[str, Any], step: int) -> None:
        try:
            self._file.write(json.dumps({"step": step, **record}) + "\n")
        except OSError as e:  # a full disk names no file: name metrics.jsonl
            if e.filename is not None or e.errno is None:
                raise
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
