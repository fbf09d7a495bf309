"""Exponential moving average (EMA) teacher, a component a method holds (BYOL's target network)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's target decay: tau = 1 - (1 - base) * (cos(pi * progress) + 1) / 2 (Grill et al. 2020, Sec. 3.3).

    Goes from `base` at progress 0 to 1 at progress 1; `progress` is clamped to [0, 1].
    """
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"EMA base momentum must be in [0, 1], got {base}")
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class EMATeacher(nn.Module):
    """A frozen deep copy of a student module, updated as an EMA of the student's weights.

    Its parameters have requires_grad=False (build optimizers from parameters that require grad), it
    runs under torch.no_grad, and it lives in the owner's state_dict so checkpoints resume it exactly.
    Its BatchNorm layers follow the owner's train/eval mode; `update` overwrites its buffers (running
    statistics) with the student's.
    """

    CACHE_SIZE = 2  # one entry per view

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self._cache: list[tuple[torch.Tensor, tuple, torch.Tensor]] = []

    def _key(self, x: torch.Tensor) -> tuple:
        """What the output depends on: the input (identity and in-place version), the teacher's weights
        (version counters: EMA updates and load_state_dict bump them) and, in eval mode, its buffers."""
        tensors = list(self.module.parameters()) + ([] if self.training else list(self.module.buffers()))
        return (x._version, self.training, tuple(id(t) for t in tensors), tuple(t._version for t in tensors))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> Any:
        """The teacher's output for `x`. The last two outputs are cached: CompMod's look-ahead passes call
        the method again on the same views with the same teacher, and then get them without a forward
        (in training mode the output does not depend on the running statistics)."""
        key = self._key(x)
        for cached_x, cached_key, out in self._cache:
            if cached_x is x and cached_key == key:
                return out
        out = self.module(x)
        self._cache = [*self._cache[-(self.CACHE_SIZE - 1) :], (x, key, out)]
        return out

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student for parameters; buffers copied.

        momentum 0 copies the student, 1 keeps the teacher. `student` must have the teacher's structure.
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        for t, s in zip(self.module.parameters(), student.parameters(), strict=True):
            t.lerp_(s.detach(), 1.0 - momentum)
        for t, s in zip(self.module.buffers(), student.buffers(), strict=True):
            t.copy_(s)
        self._cache = []
