"""Device choice, seeding and CPU threads: one code path for CPU and CUDA."""

from __future__ import annotations

import random

import numpy as np
import torch

from compmod.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu. An unavailable CUDA device is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"config key train.device: {name!r} was asked for but no CUDA device is available; use cpu"
        )
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"config key train.threads: {threads} is not accepted; expected null or >= 1")
        torch.set_num_threads(threads)
