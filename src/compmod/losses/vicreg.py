"""VICReg's variance-invariance-covariance loss (Bardes et al. 2022, Eqs. 1-6; FAIR vicreg main_vicreg.py).

Convention: the official code's, which the default coefficients (25, 25, 1) were tuned with. It takes the
MEAN of the two branches' variance terms, (v(Z) + v(Z')) / 2, where the paper's Eq. 6 writes the sum
v(Z) + v(Z'); the covariance terms are summed in both. So `vicreg_loss(z1, z2, lam, mu, nu)` equals the
paper's Eq. 6 with coefficients (lam, mu / 2, nu). Both write S(x, eps) = sqrt(Var(x) + eps) with the
unbiased variance and eps = 1e-4, gamma = 1, and C(Z) = (Z - mean)^T (Z - mean) / (n - 1).
"""

from __future__ import annotations

import torch
from torch import nn

from compmod.losses.ntxent import check_pair
from compmod.losses.precision import float32_loss

VAR_EPS = 1e-4  # eps inside the square root of the variance hinge (paper Sec. 3.1 and main_vicreg.py)


def _variance(z: torch.Tensor) -> torch.Tensor:
    """v(Z) (Eq. 1): mean over columns of max(0, 1 - sqrt(Var(z^j) + eps)), unbiased variance."""
    return torch.relu(1 - torch.sqrt(z.var(dim=0) + VAR_EPS)).mean()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    """c(Z) (Eq. 4): sum of the squared off-diagonal entries of C(Z) (Eq. 3), divided by d."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    c = centred.T @ centred / (n - 1)
    diag = torch.eye(d, dtype=torch.bool, device=z.device)
    return c.masked_fill(diag, 0).pow(2).sum() / d


@float32_loss
def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(invariance, variance, covariance) terms of VICReg, unweighted.

    z1, z2: (N, D) embeddings of two views; N >= 2. invariance s(Z, Z') = mean squared difference over all
    N * D entries (Eq. 5, F.mse_loss in the code); variance (v(Z) + v(Z')) / 2; covariance c(Z) + c(Z').
    Computed in float32 or wider with autocast off; each term a scalar.
    """
    check_pair(z1, z2, "vicreg", min_batch=2)
    dtype = torch.promote_types(torch.promote_types(z1.dtype, z2.dtype), torch.float32)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        a, b = z1.to(dtype), z2.to(dtype)
        invariance = (a - b).pow(2).mean()
        variance = (_variance(a) + _variance(b)) / 2
        covariance = _covariance(a) + _covariance(b)
    return invariance, variance, covariance


def _check_coeffs(sim_coeff: float, std_coeff: float, cov_coeff: float) -> None:
    for name, value in (("sim_coeff", sim_coeff), ("std_coeff", std_coeff), ("cov_coeff", cov_coeff)):
        if not value >= 0:
            raise ValueError(f"vicreg: {name} must be >= 0, got {value}")


def vicreg_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> torch.Tensor:
    """sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance (`vicreg_terms`).

    Defaults: main_vicreg.py's `--sim-coeff 25 --std-coeff 25 --cov-coeff 1` (paper Sec. 4.1). The
    function itself is single-process: the method passes the gathered global batch.
    """
    _check_coeffs(sim_coeff, std_coeff, cov_coeff)
    invariance, variance, covariance = vicreg_terms(z1, z2)
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


class VICRegLoss(nn.Module):
    """`vicreg_loss` as a module, with main_vicreg.py's default coefficients."""

    def __init__(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0) -> None:
        super().__init__()
        _check_coeffs(sim_coeff, std_coeff, cov_coeff)
        self.sim_coeff, self.std_coeff, self.cov_coeff = sim_coeff, std_coeff, cov_coeff

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return vicreg_loss(z1, z2, self.sim_coeff, self.std_coeff, self.cov_coeff)

    def extra_repr(self) -> str:
        return f"sim_coeff={self.sim_coeff}, std_coeff={self.std_coeff}, cov_coeff={self.cov_coeff}"
