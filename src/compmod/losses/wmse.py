"""W-MSE: Cholesky whitening of sub-batches, then the normalised MSE between the views.

References: Ermolov et al. 2021, Eqs. 4-6 and Algorithm 1; htdt/self-supervised methods/whitening.py
(`Whitening2d`) and methods/w_mse.py (`WMSE.forward`).
"""

from __future__ import annotations

import torch

from compmod.losses.byol import byol_loss
from compmod.losses.ntxent import check_pair
from compmod.losses.precision import float32_loss


def whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Cholesky whitening of each (s, d) block of x (..., s, d): (x - mean) @ L^-T, L L^T = Sigma_eps.

    Sigma = (x - mean)^T (x - mean) / (s - 1) over the block's rows; Sigma_eps = (1 - eps) Sigma + eps I, the
    official `Whitening2d` shrinkage (eps = `w_eps`, default 0). The output has covariance I when eps = 0
    and needs Sigma_eps positive definite (s > d when eps = 0); raises ValueError otherwise.
    """
    s, d = x.shape[-2:]
    if s < 2:
        raise ValueError(f"whiten: needs at least 2 rows per block, got {s}")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"whiten: eps must be in [0, 1], got {eps}")
    centred = x - x.mean(dim=-2, keepdim=True)
    cov = centred.mT @ centred / (s - 1)
    shrunk = (1 - eps) * cov + eps * torch.eye(d, dtype=x.dtype, device=x.device)
    chol, info = torch.linalg.cholesky_ex(shrunk)
    if bool(info.any()):
        raise ValueError(
            f"whiten: the covariance of {s} rows in {d} dimensions is not positive definite; "
            "use more rows than dimensions (w_size > proj_dim) or a shrinkage eps > 0"
        )
    return torch.linalg.solve_triangular(chol.mT, centred, upper=True, left=False)


@float32_loss
def wmse_loss(
    z1: torch.Tensor, z2: torch.Tensor, perms: torch.Tensor, w_size: int, eps: float = 0.0
) -> torch.Tensor:
    """W-MSE loss (Ermolov et al. 2021, Algorithm 1, as methods/w_mse.py with its default `norm=True`).

    z1, z2: (N, D) embeddings of two views. perms: (w_iter, N) permutations of range(N), one per whitening
    iteration; each is cut into N / w_size sub-batches, and each view's sub-batch is whitened on its own
    (`whiten`). The loss is the normalised MSE 2 - 2 cos between the whitened views (the official
    `norm_mse_loss`, i.e. `byol_loss`), averaged over all rows and iterations. N must be a multiple of
    w_size. Computed in float32 or wider with autocast off; returns a scalar.
    """
    check_pair(z1, z2, "wmse_loss", min_batch=2)
    n = z1.shape[0]
    if w_size < 2 or n % w_size:
        raise ValueError(
            f"wmse_loss: a batch of {n} rows does not split into sub-batches of w_size={w_size} "
            "(w_size must be >= 2 and divide the batch)"
        )
    if perms.ndim != 2 or perms.shape[1] != n or perms.dtype != torch.long:
        raise ValueError(f"wmse_loss: perms must be a (w_iter, {n}) long tensor, got {tuple(perms.shape)}")
    dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        blocks = perms.to(z1.device).reshape(-1, w_size)  # (w_iter * N / w_size, w_size)
        w1, w2 = whiten(z1.to(dtype)[blocks], eps), whiten(z2.to(dtype)[blocks], eps)
        return byol_loss(w1.flatten(0, 1), w2.flatten(0, 1))
