"""A first-in-first-out queue of past embeddings held in buffers (MoCo's negatives, SwAV's queue)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compmod.models.host_mirror import mirror, set_mirrored


class FeatureQueue(nn.Module):
    """`views` first-in-first-out queues of `size` rows of dimension `dim`, with a wrap-around pointer.

    Buffers (so checkpoints resume them): `rows` (views, size, dim), `ptr` (next row to write), `filled`
    (rows written so far, capped at `size`). `seed` set: rows start as unit-norm Gaussian vectors (MoCo's
    random initial negatives, seeded without touching the global RNG) and count as filled; else zeros.
    """

    def __init__(self, views: int, size: int, dim: int, seed: int | None = None) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"FeatureQueue: size must be >= 1, got {size}")
        if seed is None:
            rows, filled = torch.zeros(views, size, dim), 0
        else:
            g = torch.Generator().manual_seed(seed)
            rows, filled = F.normalize(torch.randn(views, size, dim, generator=g), dim=2), size
        self.register_buffer("rows", rows)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.tensor(filled, dtype=torch.long))
        mirror(self, "ptr", "filled")

    @property
    def full(self) -> bool:
        return self.host["filled"] == self.rows.shape[1]

    @torch.no_grad()
    def push_(self, keys: torch.Tensor) -> None:
        """keys (views, n, dim): written at the pointer, wrapping around; of more than `size` keys the last
        `size` stay."""
        size, n = self.rows.shape[1], keys.shape[1]
        kept = min(n, size)
        idx = (self.host["ptr"] + torch.arange(n - kept, n, device=self.rows.device)) % size
        self.rows[:, idx] = keys[:, n - kept :].to(self.rows.dtype)
        set_mirrored(self, "ptr", (self.host["ptr"] + n) % size)
        set_mirrored(self, "filled", min(self.host["filled"] + n, size))
