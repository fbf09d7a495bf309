"""Barlow Twins' redundancy-reduction loss (Zbontar et al. 2021, Eq. 1; FAIR barlowtwins main.py)."""

from __future__ import annotations

import torch
from torch import nn

from compmod.losses.ntxent import check_pair
from compmod.losses.precision import float32_loss

BN_EPS = 1e-5  # nn.BatchNorm1d's default eps, as the FAIR code's BatchNorm1d(affine=False)


def _standardise(z: torch.Tensor) -> torch.Tensor:
    """Each column to zero mean and unit biased variance over the batch, eps inside the sqrt (as BN)."""
    var, mean = torch.var_mean(z, dim=0, correction=0)
    return (z - mean) / torch.sqrt(var + BN_EPS)


@float32_loss
def barlow_twins(
    z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float, scale_loss: float = 1.0
) -> torch.Tensor:
    """Barlow Twins loss (Zbontar et al. 2021, Eq. 1, as computed in FAIR barlowtwins main.py).

    z1, z2: (N, D) projections of two views. Each column is standardised over the batch exactly as
    BatchNorm1d(affine=False) in training mode (biased variance, eps = 1e-5 inside the square root);
    c = z1_std^T z2_std / N is the (D, D) cross-correlation and the loss is
    sum_i (1 - c_ii)^2 + lambda_offdiag * sum_{i != j} c_ij^2, times `scale_loss` (solo-learn's
    `method_kwargs.scale_loss`, solo/losses/barlow.py: 0.1 in its CIFAR and ImageNet-100 recipes, 0.048 on
    ImageNet; 1 is the paper's unscaled loss). Returns a scalar in the input dtype.
    Single process: the FAIR code all-reduces c across GPUs, which this function does not do. Needs N >= 2.
    """
    check_pair(z1, z2, "barlow_twins", min_batch=2)
    if lambda_offdiag < 0:
        raise ValueError(f"barlow_twins: lambda_offdiag must be >= 0, got {lambda_offdiag}")
    if not scale_loss > 0:
        raise ValueError(f"barlow_twins: scale_loss must be > 0, got {scale_loss}")
    n, d = z1.shape
    c = _standardise(z1).T @ _standardise(z2) / n
    diag = torch.eye(d, dtype=torch.bool, device=c.device)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.masked_fill(diag, 0).pow(2).sum()
    return scale_loss * (on_diag + lambda_offdiag * off_diag)


class BarlowTwinsLoss(nn.Module):
    """`barlow_twins` as a module. lambda_offdiag=0.0051: FAIR main.py's `--lambd` default (for D = 8192);
    scale_loss=1: the paper's loss (solo-learn's recipes multiply it by 0.1, or 0.048 on ImageNet)."""

    def __init__(self, lambda_offdiag: float = 0.0051, scale_loss: float = 1.0) -> None:
        super().__init__()
        if lambda_offdiag < 0:
            raise ValueError(f"BarlowTwinsLoss: lambda_offdiag must be >= 0, got {lambda_offdiag}")
        if not scale_loss > 0:
            raise ValueError(f"BarlowTwinsLoss: scale_loss must be > 0, got {scale_loss}")
        self.lambda_offdiag = lambda_offdiag
        self.scale_loss = scale_loss

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return barlow_twins(z1, z2, self.lambda_offdiag, self.scale_loss)

    def extra_repr(self) -> str:
        return f"lambda_offdiag={self.lambda_offdiag}, scale_loss={self.scale_loss}"
