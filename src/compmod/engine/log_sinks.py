"""Where the metrics go besides `metrics.jsonl` (`train.logger`): TensorBoard, Weights & Biases, or nowhere.

Each sink gets the same records as `metrics.jsonl` (their numeric values), at the same steps. W&B runs in
offline mode by default (`train.wandb_mode`), so it needs no network and no account: the run is kept under
`<run_dir>/wandb/` and `wandb sync <run_dir>/wandb/offline-run-*` uploads it later. Its run id is a hash of
the run directory, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

from compmod.errors import ConfigError


class Sink(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "config key train.logger: 'tensorboard' needs the tensorboard package; "
                "install it with pip install 'compmod[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, config: dict[str, Any], project: str, mode: str) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "config key train.logger: 'wandb' needs the wandb package; install it with pip install "
                "'compmod[wandb]'"
            ) from None
        run_id = "compmod-" + hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(
            project=project,
            dir=str(run_dir),
            mode=mode,
            config=config,
            name=run_dir.name,
            id=run_id,
            resume="allow",
            settings=wandb.Settings(console="off", silent=True),
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


def open_sink(kind: str, run_dir: Path, config: dict[str, Any], project: str, mode: str) -> Sink | None:
    """The sink of `train.logger` (`none` gives None); `config` is the run's resolved config."""
    if kind == "tensorboard":
        return TensorBoardSink(run_dir)
    if kind == "wandb":
        return WandbSink(run_dir, config, project, mode)
    return None
