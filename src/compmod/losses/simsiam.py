"""SimSiam's negative cosine similarity D(p, z) (Chen & He 2021, Eq. 1; FAIR simsiam main_simsiam.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compmod.losses.ntxent import check_pair
from compmod.losses.precision import float32_loss


@float32_loss
def simsiam_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -mean_i cos(p_i, z_i) (SimSiam, Chen & He 2021, Eq. 1), one direction.

    p: (N, D) predictions; z: (N, D) projections of the other view, used as given (the method applies the
    stop-gradient). SimSiam's loss is D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2 (Eq. 2 and main_simsiam.py's
    `-(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5`). Equals byol_loss(p, z) / 2 - 1.
    Returns a scalar in [-1, 1], in the input dtype. A batch of one row is valid.
    """
    check_pair(p, z, "simsiam_loss", min_batch=1)
    return -(F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1).mean()
