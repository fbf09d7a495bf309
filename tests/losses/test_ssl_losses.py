"""SSL losses against independent references (float64, rel. tol. 1e-10), invariants and input errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from compmod.losses import BarlowTwinsLoss, BYOLLoss, NTXentLoss, barlow_twins, byol_loss, ntxent

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _pair(n: int = 8, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g, dtype=torch.float64),
    )


# --- references, written differently from the library code -------------------------------------------


def ntxent_reference_eq1(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR (Chen et al. 2020) Eq. 1 literally: l(i, j) = -log exp(sim_ij/t) / sum_{k != i} exp(sim_ik/t),
    averaged over all 2N ordered positive pairs (Algorithm 1), one anchor at a time."""
    x = torch.cat([z1, z2])
    two_n = x.shape[0]
    n = two_n // 2
    total = 0.0
    for i in range(two_n):
        j = (i + n) % two_n

        def sim(a: int, b: int) -> float:
            return float(x[a] @ x[b] / (x[a].norm() * x[b].norm()))

        denom = sum(math.exp(sim(i, k) / temperature) for k in range(two_n) if k != i)
        total += -math.log(math.exp(sim(i, j) / temperature) / denom)
    return torch.tensor(total / two_n, dtype=torch.float64)


def byol_reference_rows(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL (Grill et al. 2020) Eq. 2 row by row: || p/||p|| - z/||z|| ||^2."""
    terms = [((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum() for i in range(p.shape[0])]
    return torch.stack(terms).mean()


def off_diagonal(x: torch.Tensor) -> torch.Tensor:
    """FAIR barlowtwins main.py: a flattened view of the off-diagonal elements of a square matrix."""
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_reference_fair(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """FAIR barlowtwins main.py `BarlowTwins.forward`, one process: BatchNorm1d(affine=False), train mode."""
    bn = nn.BatchNorm1d(z1.shape[1], affine=False, dtype=z1.dtype).train()
    c = bn(z1).T @ bn(z2)
    c.div_(z1.shape[0])
    on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
    off_diag = off_diagonal(c).pow_(2).sum()
    return on_diag + lambd * off_diag


# --- NT-Xent ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_ntxent_matches_simclr_eq1(temperature: float) -> None:
    z1, z2 = _pair()
    assert_close(ntxent(z1, z2, temperature), ntxent_reference_eq1(z1, z2, temperature), **TOL)


def test_ntxent_module_matches_function() -> None:
    z1, z2 = _pair()
    assert_close(NTXentLoss(0.2)(z1, z2), ntxent(z1, z2, 0.2), **TOL)
    assert NTXentLoss().temperature == 0.5


def test_ntxent_symmetric_and_row_scale_invariant() -> None:
    z1, z2 = _pair()
    scale = torch.rand(z1.shape[0], 1, dtype=torch.float64) * 10 + 0.1
    assert_close(ntxent(z2, z1, 0.5), ntxent(z1, z2, 0.5), **TOL)
    assert_close(ntxent(z1 * scale, z2 / scale, 0.5), ntxent(z1, z2, 0.5), **TOL)


def test_ntxent_identical_orthogonal_views_reach_the_bound() -> None:
    """z1 = z2 = orthonormal rows: each anchor sees exp(1/t) against exp(1/t) + (2N - 2) * exp(0)."""
    n, t = 4, 0.5
    z = torch.eye(n, dtype=torch.float64)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2))
    assert_close(ntxent(z, z.clone(), t), torch.tensor(expected, dtype=torch.float64), **TOL)


# --- BYOL ---------------------------------------------------------------------------------------------


def test_byol_loss_matches_eq2_rows() -> None:
    p, z = _pair()
    assert_close(byol_loss(p, z), byol_reference_rows(p, z), **TOL)
    assert_close(BYOLLoss()(p, z), byol_reference_rows(p, z), **TOL)


def test_byol_loss_invariants() -> None:
    p, z = _pair()
    scale = torch.rand(p.shape[0], 1, dtype=torch.float64) * 10 + 0.1
    assert_close(byol_loss(p * scale, z), byol_loss(p, z), **TOL)
    assert_close(byol_loss(p, 3.0 * z), byol_loss(p, z), **TOL)
    assert_close(byol_loss(p, 2.5 * p), torch.tensor(0.0, dtype=torch.float64), **TOL)
    assert_close(byol_loss(p, -p), torch.tensor(4.0, dtype=torch.float64), **TOL)


def test_byol_loss_accepts_one_row() -> None:
    p, z = _pair(n=1)
    assert_close(byol_loss(p, z), byol_reference_rows(p, z), **TOL)


# --- Barlow Twins -------------------------------------------------------------------------------------


@pytest.mark.parametrize("lambd", [0.0, 0.0051, 1.0])
def test_barlow_twins_matches_fair_main(lambd: float) -> None:
    z1, z2 = _pair(n=16, d=6)
    assert_close(barlow_twins(z1, z2, lambd), barlow_reference_fair(z1, z2, lambd), **TOL)
    assert_close(BarlowTwinsLoss(lambd)(z1, z2), barlow_reference_fair(z1, z2, lambd), **TOL)


def test_barlow_twins_invariant_to_per_column_affine_maps() -> None:
    """Standardisation removes any per-column shift and positive scale (up to BN's eps)."""
    z1, z2 = _pair(n=16, d=6)
    a = torch.rand(6, dtype=torch.float64) * 3 + 0.5
    b = torch.randn(6, dtype=torch.float64)
    # eps = 1e-5 inside the sqrt makes the invariance approximate: relative error ~ eps / var.
    assert_close(barlow_twins(a * z1 + b, z2 - b, 0.0051), barlow_twins(z1, z2, 0.0051), rtol=1e-4, atol=0)


def test_barlow_twins_identical_orthogonal_views_give_eps_only() -> None:
    """Walsh columns (+-1 sign patterns): zero mean, unit variance, orthogonal. With z1 = z2,
    c = I / (1 + eps) exactly, so the loss is D * (1 - 1 / (1 + eps))^2, i.e. zero up to BN's eps = 1e-5."""
    n, d = 16, 4
    bits = (torch.arange(n)[:, None] >> torch.arange(d)[None, :]) & 1
    z = (1 - 2 * bits).to(torch.float64)
    expected = d * (1 - 1 / (1 + 1e-5)) ** 2
    loss = barlow_twins(z, z.clone(), 1.0)
    assert_close(loss, torch.tensor(expected, dtype=torch.float64), **TOL)
    assert float(loss) < 1e-9


# --- shared: gradients, dtypes, errors ----------------------------------------------------------------

LOSSES = {
    "ntxent": lambda a, b: ntxent(a, b, 0.5),
    "byol": byol_loss,
    "barlow_twins": lambda a, b: barlow_twins(a, b, 0.0051),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_loss_gradients_finite_and_dtype_kept(name: str, dtype: torch.dtype) -> None:
    z1, z2 = (t.to(dtype).requires_grad_() for t in _pair())
    loss = LOSSES[name](z1, z2)
    assert loss.dtype == dtype and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    assert z1.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_gradcheck_float64(name: str) -> None:
    z1, z2 = (t.requires_grad_() for t in _pair(n=4, d=3))
    assert torch.autograd.gradcheck(LOSSES[name], (z1, z2))


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(
    ("shape1", "shape2", "match"),
    [
        ((4, 3), (4, 2), "same shape"),
        ((4, 3), (5, 3), "same shape"),
        ((12,), (12,), "2-D"),
        ((2, 3, 2), (2, 3, 2), "2-D"),
    ],
)
def test_loss_rejects_bad_shapes(name: str, shape1: tuple, shape2: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LOSSES[name](torch.randn(shape1), torch.randn(shape2))


@pytest.mark.parametrize("name", ["ntxent", "barlow_twins"])
def test_loss_rejects_batch_of_one(name: str) -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        LOSSES[name](torch.randn(1, 3), torch.randn(1, 3))


def test_byol_loss_rejects_empty_batch_and_integers() -> None:
    with pytest.raises(ValueError, match="at least 1 rows"):
        byol_loss(torch.randn(0, 3), torch.randn(0, 3))
    with pytest.raises(ValueError, match="floating-point"):
        byol_loss(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))


def test_loss_modules_reject_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="temperature"):
        ntxent(*_pair(), temperature=-1.0)
    with pytest.raises(ValueError, match="lambda_offdiag"):
        BarlowTwinsLoss(-0.1)
