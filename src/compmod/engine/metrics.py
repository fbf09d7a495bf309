"""Metrics sinks: `metrics.jsonl` in the run directory, optionally TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from compmod.engine.log_sinks import Sink


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
    """Appends one JSON object per call to `<run_dir>/metrics.jsonl`; mirrors the numeric values to the
    `train.logger` sink (engine/log_sinks.py), when one is given."""

    def __init__(self, run_dir: str | Path, sink: Sink | None = None) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1)
        self._sink = sink

    def log(self, record: dict[str, Any], step: int) -> None:
        try:
            self._file.write(json.dumps({"step": step, **record}) + "\n")
        except OSError as e:  # a full disk names no file: name metrics.jsonl
            if e.filename is not None or e.errno is None:
                raise
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        if self._sink is not None:
            scalars = {
                k: v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)
            }
            self._sink.log(scalars, step)

    def close(self) -> None:
        self._file.close()
        if self._sink is not None:
            self._sink.close()


class StepMeter:
    """Each step's logged values (0-d tensors or floats), kept on the device until `read`, which waits for
    the device once; the Trainer reads every `train.log_every` steps, so steps in between never wait.

    Keeps the last step's values, the sums since `reset` and the first step whose loss was not finite,
    with that step's values (found by device ops, read with the rest)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.last: dict[str, Any] = {}
        self.sums: dict[str, Any] = {}
        self.bad_step: Any = -1
        self.bad: dict[str, Any] = {}

    def add(self, step: int, values: dict[str, Any]) -> None:
        self.last = values
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        loss = torch.as_tensor(values["loss"])
        if not isinstance(self.bad_step, torch.Tensor):  # a fill on the device: nothing waits
            self.bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = (self.bad_step < 0) & ~torch.isfinite(loss)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad = {k: torch.where(first, v, self.bad.get(k, torch.nan)) for k, v in values.items()}

    def read(self) -> tuple[dict[str, float], dict[str, float], int, dict[str, float]]:
        """(last step's values, sums, first non-finite step or -1, that step's values) as Python numbers."""
        groups = (self.last, self.sums, {"step": self.bad_step}, self.bad)
        device = torch.as_tensor(self.bad_step).device
        flat = [torch.as_tensor(v, dtype=torch.float64, device=device) for g in groups for v in g.values()]
        numbers = torch.stack(flat).tolist() if flat else []  # one copy to the host: one wait
        out, start = [], 0
        for g in groups:
            out.append(dict(zip(g, numbers[start : start + len(g)], strict=True)))
            start += len(g)
        return out[0], out[1], int(out[2]["step"]), out[3]
