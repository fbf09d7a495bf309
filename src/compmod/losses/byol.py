"""BYOL's regression loss between online predictions and target projections (Grill et al. 2020, Eq. 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compmod.losses.ntxent import check_pair
from compmod.losses.precision import float32_loss


@float32_loss
def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z) (BYOL, Grill et al. 2020, Eq. 2).

    p: (N, D) online predictions; z: (N, D) target projections, used as given (the method detaches
    the target). One direction only: BYOL's symmetric loss is byol_loss(p1, z2) + byol_loss(p2, z1).
    Returns a scalar in [0, 4], in the input dtype. A batch of one row is valid.
    """
    check_pair(p, z, "byol_loss", min_batch=1)
    cos = (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)
    return (2 - 2 * cos).mean()


class BYOLLoss(nn.Module):
    """`byol_loss` as a module (no parameters)."""

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return byol_loss(p, z)
