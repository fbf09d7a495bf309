"""Metrics sinks: `metrics.jsonl` in the run directory, optionally TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compmod.errors import ConfigError


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
        self._file.write(json.dumps({"step": step, **record}) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
