"""Fusion of the two views into the comprehensive input of g_xi (Eq. 5, 11 and 12 of the CompMod paper)."""

from __future__ import annotations

from typing import Literal

import torch

Fusion = Literal["concat_h", "concat_z", "mixup_h"]
FUSIONS: tuple[str, ...] = ("concat_h", "concat_z", "mixup_h")


def fusion_dims(fusion: str, feat_dim: int, emb_dim: int) -> tuple[int, int]:
    """(input dim, hidden dim) of g_xi: concat_h 2d'->d'->d (Eq. 5), concat_z 2d->d->d (Eq. 12),
    mixup_h d'->d'->d (Eq. 11)."""
    if fusion == "concat_h":
        return 2 * feat_dim, feat_dim
    if fusion == "concat_z":
        return 2 * emb_dim, emb_dim
    if fusion == "mixup_h":
        return feat_dim, feat_dim
    raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


def fuse(
    fusion: str,
    h: tuple[torch.Tensor, torch.Tensor],
    z: tuple[torch.Tensor, torch.Tensor],
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fused input of g_xi. h: (N, d') pair; z: (N, d) pair; alpha: (N, 1) mixup weights for mixup_h."""
    if fusion == "concat_h":
        return torch.cat(h, dim=1)
    if fusion == "concat_z":
        return torch.cat(z, dim=1)
    if fusion == "mixup_h":
        if alpha is None:
            raise ValueError("mixup_h fusion needs alpha")
        return alpha * h[0] + (1 - alpha) * h[1]
    raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")


def uses_h(fusion: str) -> bool:
    return fusion != "concat_z"
