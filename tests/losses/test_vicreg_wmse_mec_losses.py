"""VICReg, W-MSE, MEC and SimSiam losses against independent references (float64, rel. tol. 1e-10),
invariants, forward-mode AD and input errors.

References (each re-written here, in loops or other ops than the library):
- VICReg: the paper's Eqs. 1-6 (Bardes et al. 2022) in loops, and FAIR vicreg main_vicreg.py
  `VICReg.forward` (one process) with torch.cov / torch.var. The library follows the code (variance term
  averaged over the branches), so it equals the paper's Eq. 6 with mu / 2.
- W-MSE: htdt/self-supervised methods/w_mse.py `WMSE.forward` + methods/whitening.py `Whitening2d`
  (track_running_stats=False): sub-batch loop, index assignment, a 1x1 conv2d with the inverse Cholesky
  factor, `norm_mse_loss`.
- MEC: xinliu20/MEC main_pretrain.py `train` + `loss_func` (running power matrix, torch.trace), and the
  eigenvalue form sum_k (-1)^(k+1)/k sum_j mu_j^k of the same series.
- SimSiam: Eq. 1 of Chen & He 2021 row by row, symmetrised as FAIR simsiam main_simsiam.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from compmod.losses.byol import byol_loss
from compmod.losses.mec import mec_lambda, mec_loss
from compmod.losses.simsiam import simsiam_loss
from compmod.losses.vicreg import VICRegLoss, vicreg_loss, vicreg_terms
from compmod.losses.wmse import whiten, wmse_loss

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _pair(
    n: int = 8, d: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(n, d, generator=g, dtype=dtype)


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


# --- references ---------------------------------------------------------------------------------------


def vicreg_reference_paper(
    z1: torch.Tensor, z2: torch.Tensor, lam: float, mu: float, nu: float
) -> torch.Tensor:
    """VICReg paper Eqs. 1-6 in plain loops: l = lam s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')], with
    v(Z) = 1/d sum_j max(0, 1 - sqrt(Var(z^j) + 1e-4)), c(Z) = 1/d sum_{i != j} C(Z)_ij^2,
    C(Z) = 1/(n-1) sum_i (z_i - zbar)(z_i - zbar)^T, s = 1/(n d) sum_i ||z_i - z'_i||^2 (the code's MSE)."""
    n, d = z1.shape

    def v(z: torch.Tensor) -> float:
        total = 0.0
        for j in range(d):
            col = [float(z[i, j]) for i in range(n)]
            mean = sum(col) / n
            var = sum((c - mean) ** 2 for c in col) / (n - 1)
            total += max(0.0, 1.0 - math.sqrt(var + 1e-4))
        return total / d

    def c(z: torch.Tensor) -> float:
        means = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
        total = 0.0
        for a in range(d):
            for b in range(d):
                if a != b:
                    cab = sum((float(z[i, a]) - means[a]) * (float(z[i, b]) - means[b]) for i in range(n)) / (
                        n - 1
                    )
                    total += cab**2
        return total / d

    s = sum(float(z1[i, j] - z2[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    return _scalar(lam * s + mu * (v(z1) + v(z2)) + nu * (c(z1) + c(z2)))


def vicreg_reference_fair(
    z1: torch.Tensor, z2: torch.Tensor, sim: float, std: float, cov: float
) -> torch.Tensor:
    """main_vicreg.py `VICReg.forward`, one process: F.mse_loss, std terms halved, covariance / d."""
    d = z1.shape[1]
    repr_loss = F.mse_loss(z1, z2)
    std_loss = sum(torch.mean(F.relu(1 - torch.sqrt(torch.var(z, dim=0) + 0.0001))) / 2 for z in (z1, z2))
    cov_loss = sum(((torch.cov(z.T) * (1 - torch.eye(d, dtype=z.dtype))) ** 2).sum() / d for z in (z1, z2))
    return sim * repr_loss + std * std_loss + cov * cov_loss


def whitening2d_reference(x: torch.Tensor, eps: float) -> torch.Tensor:
    """htdt methods/whitening.py `Whitening2d.forward`, training mode: 1x1 conv with the inverse Cholesky
    factor of the shrunk covariance."""
    d = x.shape[1]
    xn = x - x.mean(0, keepdim=True)
    f_cov = xn.T @ xn / (x.shape[0] - 1)
    shrunk = (1 - eps) * f_cov + eps * torch.eye(d, dtype=x.dtype)
    inv_sqrt = torch.linalg.inv(torch.linalg.cholesky(shrunk))
    return F.conv2d(xn[:, :, None, None], inv_sqrt[:, :, None, None])[:, :, 0, 0]


def wmse_reference_htdt(h1: torch.Tensor, h2: torch.Tensor, perms: torch.Tensor, w_size: int, eps: float):
    """htdt methods/w_mse.py `WMSE.forward` for two samples: whiten each view's sub-batch, assemble z by
    index, `norm_mse_loss` = 2 - 2 * mean cosine, divided by w_iter * num_pairs (= w_iter)."""
    bs = h1.shape[0]
    h = torch.cat([h1, h2])
    loss = 0.0
    for perm in perms:
        z = torch.empty_like(h)
        for idx in perm.view(-1, w_size):
            for i in range(2):
                z[idx + i * bs] = whitening2d_reference(h[idx + i * bs], eps)
        x0, x1 = F.normalize(z[:bs]), F.normalize(z[bs:])
        loss = loss + 2 - 2 * (x0 * x1).sum(dim=-1).mean()
    return loss / len(perms)


def mec_reference_official(p1, p2, t1, t2, lam: float, order: int = 4) -> torch.Tensor:
    """xinliu20/MEC main_pretrain.py: `loss_func(p, z, lamda_inv)` (teacher p, student z: c = p_hat z_hat^T /
    lamda_inv, running power matrix, alternating sum, trace), then in `train`
    mec = (loss_func(p1, z2) + loss_func(p2, z1)) * 0.5 / m and loss = -mec * lamda_inv."""
    lamda_inv = 1.0 / lam

    def loss_func(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        c = F.normalize(p) @ F.normalize(z).T / lamda_inv
        power, acc = c, torch.zeros_like(c)
        for k in range(1, order + 1):
            if k > 1:
                power = power @ c
            acc = acc + power / k if k % 2 == 1 else acc - power / k
        return torch.trace(acc)

    m = p1.shape[0]
    mec = (loss_func(t1, p2) + loss_func(t2, p1)) * 0.5 / m
    return -mec * lamda_inv


def mec_reference_eigen(p1, p2, t1, t2, lam: float, order: int = 4) -> torch.Tensor:
    """The same series through eigenvalues: Tr(C^k) = sum_j mu_j^k, mu = eig(lam t_hat p_hat^T), complex."""
    total = 0.0
    for t, p in ((t1, p2), (t2, p1)):
        mu = torch.linalg.eigvals(lam * F.normalize(t, dim=1) @ F.normalize(p, dim=1).T)
        total += sum((-1) ** (k + 1) / k * complex((mu**k).sum()).real for k in range(1, order + 1))
    return _scalar(-total / (2 * lam * p1.shape[0]))


# --- VICReg -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sim", "std", "cov"), [(25.0, 25.0, 1.0), (1.0, 0.0, 0.0), (0.0, 3.0, 0.5)])
def test_vicreg_matches_fair_main_and_paper_with_half_mu(sim: float, std: float, cov: float) -> None:
    z1, z2 = _pair(n=7, d=4)
    z1 = z1 * 0.3  # some columns with std < 1, so the variance hinge is active
    got = vicreg_loss(z1, z2, sim, std, cov)
    assert_close(got, vicreg_reference_fair(z1, z2, sim, std, cov), **TOL)
    # the paper sums v(Z) + v(Z'); the code (and this library) averages them: paper(mu / 2) == ours(mu)
    assert_close(got, vicreg_reference_paper(z1, z2, sim, std / 2, cov), **TOL)
    assert_close(VICRegLoss(sim, std, cov)(z1, z2), got, **TOL)


def test_vicreg_default_coefficients_and_terms() -> None:
    z1, z2 = _pair()
    inv, var, cov = vicreg_terms(z1, z2)
    assert_close(vicreg_loss(z1, z2), 25 * inv + 25 * var + cov, **TOL)
    assert_close(inv, vicreg_reference_paper(z1, z2, 1.0, 0.0, 0.0), **TOL)
    assert_close(var, vicreg_reference_paper(z1, z2, 0.0, 0.5, 0.0), **TOL)
    assert_close(cov, vicreg_reference_paper(z1, z2, 0.0, 0.0, 1.0), **TOL)


def test_vicreg_invariances_and_known_values() -> None:
    z1, z2 = _pair(n=16, d=6)
    shift = torch.randn(6, dtype=torch.float64)
    # variance and covariance ignore a common shift; invariance ignores a shift of both views
    assert_close(vicreg_loss(z1 + shift, z2 + shift), vicreg_loss(z1, z2), **TOL)
    assert_close(vicreg_loss(z2, z1), vicreg_loss(z1, z2), **TOL)
    # Walsh columns (+-1, zero mean, orthogonal) scaled by 2: no variance, covariance or invariance term
    bits = (torch.arange(16)[:, None] >> torch.arange(4)[None, :]) & 1
    z = 2 * (1 - 2 * bits).to(torch.float64)
    assert_close(vicreg_loss(z, z.clone()), _scalar(0.0), **TOL)
    # collapse: every column constant -> variance term = 1 - sqrt(eps) per branch (mean of the two)
    const = torch.ones(8, 3, dtype=torch.float64)
    assert_close(vicreg_loss(const, const, 0.0, 1.0, 0.0), _scalar(1 - math.sqrt(1e-4)), **TOL)


# --- W-MSE --------------------------------------------------------------------------------------------


def _perms(n: int, w_iter: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(n, generator=g) for _ in range(w_iter)])


@pytest.mark.parametrize(
    ("n", "d", "w_size", "w_iter", "eps"), [(12, 3, 6, 1, 0.0), (16, 4, 8, 3, 0.1), (9, 2, 9, 2, 0.0)]
)
def test_wmse_matches_htdt_w_mse(n: int, d: int, w_size: int, w_iter: int, eps: float) -> None:
    z1, z2 = _pair(n=n, d=d)
    perms = _perms(n, w_iter)
    assert_close(
        wmse_loss(z1, z2, perms, w_size, eps), wmse_reference_htdt(z1, z2, perms, w_size, eps), **TOL
    )


def test_whiten_matches_whitening2d_and_whitens() -> None:
    x = _pair(n=10, d=4)[0] @ torch.randn(
        4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    w = whiten(x)
    assert_close(w, whitening2d_reference(x, 0.0), **TOL)
    assert_close(w.T @ w / 9, torch.eye(4, dtype=torch.float64), **TOL)
    assert_close(w.mean(0), torch.zeros(4, dtype=torch.float64), rtol=0, atol=1e-12)
    # batched blocks are whitened independently
    blocks = torch.stack([x, 2 * x.flip(0) + 1])
    assert_close(whiten(blocks, 0.2)[1], whitening2d_reference(blocks[1], 0.2), **TOL)
    # eps = 1 shrinks to the identity: whitening is only centring
    assert_close(whiten(x, 1.0), x - x.mean(0), **TOL)


def test_wmse_invariant_to_lower_triangular_affine_maps_per_view() -> None:
    """Cholesky whitening of x A^T + b, A lower triangular with a positive diagonal, equals that of x; so
    the loss is unchanged when each view gets its own such map (an upper-triangular A changes it)."""
    z1, z2 = _pair(n=12, d=4)
    perms = _perms(12, 2)
    g = torch.Generator().manual_seed(5)
    a1 = torch.randn(4, 4, generator=g, dtype=torch.float64).tril().fill_diagonal_(1.5)
    a2 = torch.randn(4, 4, generator=g, dtype=torch.float64).tril().fill_diagonal_(0.7)
    base = wmse_loss(z1, z2, perms, 6)
    assert_close(wmse_loss(z1 @ a1.T + 3.0, z2 @ a2.T - 1.0, perms, 6), base, **TOL)
    assert not torch.allclose(wmse_loss(z1 @ a1, z2, perms, 6), base)  # upper-triangular: not invariant


def test_wmse_sub_batch_split_matters_unless_it_is_the_whole_batch() -> None:
    z1, z2 = _pair(n=12, d=3)
    p, q = _perms(12, 1, seed=1), _perms(12, 1, seed=2)
    assert not torch.allclose(wmse_loss(z1, z2, p, 4), wmse_loss(z1, z2, q, 4))
    assert_close(wmse_loss(z1, z2, p, 12), wmse_loss(z1, z2, q, 12), **TOL)  # whitening is equivariant
    assert_close(wmse_loss(z1, z2, torch.arange(12)[None], 12), wmse_loss(z1, z2, p, 12), **TOL)
    # identical views: whitened identically, loss 0
    assert_close(wmse_loss(z1, z1.clone(), p, 4), _scalar(0.0), rtol=0, atol=1e-12)


def test_wmse_rejects_bad_inputs() -> None:
    z1, z2 = _pair(n=12, d=3)
    with pytest.raises(ValueError, match="batch of 12 rows does not split into sub-batches of w_size=5"):
        wmse_loss(z1, z2, _perms(12, 1), 5)
    with pytest.raises(ValueError, match="w_size=1"):
        wmse_loss(z1, z2, _perms(12, 1), 1)
    with pytest.raises(ValueError, match=r"perms must be a \(w_iter, 12\) long tensor"):
        wmse_loss(z1, z2, _perms(12, 1)[:, :6], 6)
    flat = z1.clone()
    flat[:, -1] = 0.0  # a constant column: Sigma is singular
    with pytest.raises(ValueError, match="covariance of 6 rows in 3 dimensions is not positive definite"):
        wmse_loss(flat, z2, _perms(12, 1), 6, eps=0.0)
    assert torch.isfinite(wmse_loss(flat, z2, _perms(12, 1), 6, eps=1e-3))  # shrinkage makes it defined
    with pytest.raises(ValueError, match="eps must be in"):
        whiten(z1, eps=1.5)
    with pytest.raises(ValueError, match="same shape"):
        wmse_loss(z1, z2[:, :2], _perms(12, 1), 6)


# --- MEC ----------------------------------------------------------------------------------------------


def _four(m: int, d: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(m, d, generator=g, dtype=torch.float64) for _ in range(4))


@pytest.mark.parametrize(("m", "d"), [(6, 4), (4, 9)])
@pytest.mark.parametrize("order", [1, 2, 4, 5])
def test_mec_loss_matches_official_and_eigenvalue_forms(m: int, d: int, order: int) -> None:
    p1, p2, t1, t2 = _four(m, d)
    lam = 0.3
    got = mec_loss(p1, p2, t1, t2, lam, order)
    assert_close(got, mec_reference_official(p1, p2, t1, t2, lam, order), **TOL)
    assert_close(got, mec_reference_eigen(p1, p2, t1, t2, lam, order), rtol=1e-10, atol=1e-10)


def test_mec_loss_first_order_is_minus_mean_cosine_and_row_scale_invariant() -> None:
    p1, p2, t1, t2 = _four(8, 5)
    cos = (F.cosine_similarity(t1, p2).mean() + F.cosine_similarity(t2, p1).mean()) / 2
    assert_close(mec_loss(p1, p2, t1, t2, 0.2, order=1), -cos, **TOL)
    s = torch.rand(8, 1, dtype=torch.float64) + 0.5
    assert_close(mec_loss(p1 * s, p2, t1, t2 / s, 0.2), mec_loss(p1, p2, t1, t2, 0.2), **TOL)


def test_mec_loss_series_approaches_the_log_det() -> None:
    """MEC Eq. 2: with rho(C) < 1 the series converges to -(logdet(I + C12) + logdet(I + C21)) / (2 lam m)."""
    p1, p2, t1, t2 = _four(6, 8)
    lam = mec_lambda(6, 8, eps_sq=64.0)  # 8 / (6 * 64): rho(C) well below 1
    logdet = sum(
        torch.logdet(torch.eye(6, dtype=torch.float64) + lam * F.normalize(t) @ F.normalize(p).T)
        for t, p in ((t1, p2), (t2, p1))
    )
    assert_close(mec_loss(p1, p2, t1, t2, lam, order=30), -logdet / (2 * lam * 6), rtol=1e-12, atol=1e-12)


def test_mec_loss_rejects_bad_inputs() -> None:
    p1, p2, t1, t2 = _four(4, 3)
    with pytest.raises(ValueError, match="equal shape"):
        mec_loss(p1, p2, t1, t2[:, :2], 0.1)
    with pytest.raises(ValueError, match="lam must be > 0"):
        mec_loss(p1, p2, t1, t2, 0.0)
    with pytest.raises(ValueError, match="order must be an integer >= 1"):
        mec_loss(p1, p2, t1, t2, 0.1, order=0)


# --- SimSiam ------------------------------------------------------------------------------------------


def test_simsiam_loss_matches_eq1_rows_and_byol_relation() -> None:
    p, z = _pair()
    rows = [-(p[i] @ z[i]) / (p[i].norm() * z[i].norm()) for i in range(p.shape[0])]
    assert_close(simsiam_loss(p, z), torch.stack(rows).mean(), **TOL)
    assert_close(simsiam_loss(p, z), byol_loss(p, z) / 2 - 1, **TOL)
    assert_close(simsiam_loss(p, 3 * p), _scalar(-1.0), **TOL)
    with pytest.raises(ValueError, match="same shape"):
        simsiam_loss(p, z[:, :2])


# --- shared: gradients, forward mode, dtypes ----------------------------------------------------------

LOSSES = {
    "vicreg": lambda a, b: vicreg_loss(a, b),
    "wmse": lambda a, b: wmse_loss(a, b, _perms(a.shape[0], 2), a.shape[0] // 2, 0.05),
    "mec": lambda a, b: mec_loss(
        a, b, *(t.to(a.dtype) for t in _four(8, 3, seed=4)[:2]), 0.2
    ),  # fixed teacher
    "simsiam": simsiam_loss,
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_gradcheck_float64(name: str) -> None:
    z1, z2 = (t.requires_grad_() for t in _pair(n=8, d=3))
    assert torch.autograd.gradcheck(LOSSES[name], (z1, z2))


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # torch's own jvp decompositions
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_forward_mode_equals_reverse_mode(name: str) -> None:
    """CompMod's `jvp` meta step pushes tangents through the loss: forward mode must work and agree."""
    z1, z2 = _pair(n=8, d=3)
    v1, v2 = _pair(n=8, d=3, seed=9)
    _, tangent = torch.func.jvp(LOSSES[name], (z1, z2), (v1, v2))
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    g1, g2 = torch.autograd.grad(LOSSES[name](a, b), (a, b))
    assert_close(tangent, (g1 * v1).sum() + (g2 * v2).sum(), **TOL)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_keeps_float32_and_is_finite(name: str) -> None:
    z1, z2 = (t.requires_grad_() for t in _pair(n=8, d=3, dtype=torch.float32))
    loss = LOSSES[name](z1, z2)
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


def test_loss_errors_for_bad_shapes_and_coefficients() -> None:
    with pytest.raises(ValueError, match="at least 2 rows"):
        vicreg_loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="2-D"):
        vicreg_loss(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match="std_coeff must be >= 0"):
        VICRegLoss(std_coeff=-1.0)
    with pytest.raises(ValueError, match="floating-point"):
        simsiam_loss(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))
