"""MEC-style losses of CompMod (Eq. 6 and 7) against independent float64 references, plus the exact log-det,
invariances, gradients, dtypes, input errors and the lambda schedule (MEC official code `lamda_scheduler`).

Contract tested (â, b̂: row-L2-normalised a, b of shape (m, d)):
    mec_taylor(a, b, lam, order) = sum_{k=1..order} (-1)^{k+1}/k * Tr((lam * â b̂^T)^k)
    comp_loss = -T(ẑ, ẑ) / (lam m)  ("mec")   |  -(m + d)/2 * T(ẑ, ẑ)  ("paper")
    mcr_loss  = the same scalings of T(ẑ, z1) + T(ẑ, z2)
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from compmod.losses import comp_loss, lambda_at, mcr_loss, mec_lambda, mec_taylor

F64 = torch.float64
TOL = {"rtol": 1e-12, "atol": 1e-13}
# (m, d): m < d, m > d (the implementation switches to the d x d form), m == d
SHAPES = [(4, 9), (9, 4), (6, 6)]
LAMS = [0.05, 0.3, 1.5]  # the identity of the series holds for any lam, convergent (rho < 1) or not
ORDERS = range(1, 7)


def _randn(m: int, d: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g, dtype=F64).to(dtype)


# --- references, written differently from the library code -------------------------------------------


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Row-normalise by an explicit per-row square root (not F.normalize)."""
    return x / torch.sqrt((x * x).sum(dim=1, keepdim=True))


def taylor_ref_matrix_power(a: torch.Tensor, b: torch.Tensor, lam: float, order: int) -> torch.Tensor:
    """Definition, literally: the m x m matrix C = lam * â b̂^T (always m x m, whatever m vs d), and
    sum_k (-1)^{k+1}/k * Tr(torch.linalg.matrix_power(C, k))."""
    c = lam * (_unit_rows(a) @ _unit_rows(b).T)
    total = torch.zeros((), dtype=c.dtype)
    for k in range(1, order + 1):
        total = total + (-1) ** (k + 1) / k * torch.linalg.matrix_power(c, k).trace()
    return total


def taylor_ref_mec_code(p: torch.Tensor, z: torch.Tensor, lam: float, order: int) -> torch.Tensor:
    """Style of MEC's official `loss_func` (xinliu20/MEC main_pretrain.py), one process:
    c = p̂ ẑ^T / lamda_inv, a running power_matrix, a sum_matrix that adds odd and subtracts even
    powers / k (in place, as there), then the trace."""
    lamda_inv = 1.0 / lam
    p_hat = p / p.norm(dim=1, keepdim=True)
    z_hat = z / z.norm(dim=1, keepdim=True)
    c = (p_hat @ z_hat.T) / lamda_inv
    power_matrix = c
    sum_matrix = torch.zeros_like(c)
    for k in range(1, order + 1):
        if k > 1:
            power_matrix = power_matrix @ c
        if k % 2 == 1:
            sum_matrix += power_matrix / k
        else:
            sum_matrix -= power_matrix / k
    return torch.trace(sum_matrix)


def scaled_ref(t: torch.Tensor, lam: float, m: int, d: int, scale: str) -> torch.Tensor:
    """The two documented scalings: MEC code -T / (lam m); paper Eq. 6/7 -mu T with mu = (m + d) / 2."""
    return {"mec": -t / (lam * m), "paper": -(m + d) / 2 * t}[scale]


def _spectral_radius(c: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(c).abs().max())


# --- 1. the series against two independent references ---------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}d{s[1]}")
@pytest.mark.parametrize("same", [False, True], ids=["a!=b", "a==b"])
def test_mec_taylor_equals_matrix_power_reference(shape: tuple[int, int], same: bool) -> None:
    """Reference: `taylor_ref_matrix_power` (explicit m x m C, torch.linalg.matrix_power, trace),
    orders 1..6 and lam in {0.05, 0.3, 1.5}, float64, rtol 1e-12."""
    m, d = shape
    a = _randn(m, d, seed=1)
    b = a if same else _randn(m, d, seed=2)
    for lam in LAMS:
        for order in ORDERS:
            got = mec_taylor(a, b, lam, order)
            assert got.dtype == F64 and got.shape == ()
            assert_close(
                got, taylor_ref_matrix_power(a, b, lam, order), **TOL, msg=f"lam={lam} order={order}"
            )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}d{s[1]}")
@pytest.mark.parametrize("same", [False, True], ids=["a!=b", "a==b"])
def test_mec_taylor_equals_mec_official_loss_func_style(shape: tuple[int, int], same: bool) -> None:
    """Reference: `taylor_ref_mec_code` (MEC official `loss_func`: running power_matrix,
    sum_matrix +- power/k, trace), orders 1..6, lam in {0.05, 0.3, 1.5}, float64, rtol 1e-12."""
    m, d = shape
    a = _randn(m, d, seed=3)
    b = a if same else _randn(m, d, seed=4)
    for lam in LAMS:
        for order in ORDERS:
            assert_close(
                mec_taylor(a, b, lam, order),
                taylor_ref_mec_code(a, b, lam, order),
                **TOL,
                msg=f"lam={lam} order={order}",
            )


def test_mec_taylor_is_symmetric_in_its_arguments_and_default_order_is_4() -> None:
    """Reference: Tr((A B^T)^k) = Tr((B A^T)^k) (transpose), so T(a, b) = T(b, a); and the default order
    is 4 (`taylor_ref_matrix_power` with order 4)."""
    a, b = _randn(5, 7, seed=5), _randn(5, 7, seed=6)
    assert_close(mec_taylor(a, b, 0.4, 5), mec_taylor(b, a, 0.4, 5), **TOL)
    assert_close(mec_taylor(a, b, 0.4), taylor_ref_matrix_power(a, b, 0.4, 4), **TOL)


# --- 2. row normalisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}d{s[1]}")
def test_row_scaling_invariance(shape: tuple[int, int]) -> None:
    """Reference: the unscaled inputs (â is invariant to positive row scaling); also `taylor_ref_matrix_power`
    on the scaled inputs, so a missing normalisation is caught either way."""
    m, d = shape
    a, b, z1, z2 = (_randn(m, d, seed=s) for s in (7, 8, 9, 10))
    g = torch.Generator().manual_seed(11)
    sa, sb = (torch.exp(4 * torch.rand(m, 1, generator=g, dtype=F64) - 2) for _ in range(2))  # [e^-2, e^2]
    for order in (1, 2, 4):
        assert_close(mec_taylor(a * sa, b * sb, 0.3, order), mec_taylor(a, b, 0.3, order), **TOL)
        assert_close(mec_taylor(a * sa, b * sb, 0.3, order), taylor_ref_matrix_power(a, b, 0.3, order), **TOL)
        assert_close(comp_loss(a * sa, 0.3, order), comp_loss(a, 0.3, order), **TOL)
        assert_close(
            mcr_loss(a * sa, z1 * sb, z2 * 7.5, 0.3, order, "paper"),
            mcr_loss(a, z1, z2, 0.3, order, "paper"),
            **TOL,
        )


# --- 3. the series against the exact log-determinant ------------------------------------------------------


def _alternating_remainder_bounds(c: torch.Tensor, order: int) -> tuple[float, float]:
    """For PSD C with eigenvalues mu_i in [0, 1): log(1+mu) - S_n(mu) has the sign (-1)^n and, as an
    alternating series with decreasing terms, mu^{n+1}/(n+1) - mu^{n+2}/(n+2) <= |R_n| <= mu^{n+1}/(n+1).
    Summed over eigenvalues:
        Tr(C^{n+1})/(n+1) - Tr(C^{n+2})/(n+2) <= (-1)^n (logdet - T_n) <= Tr(C^{n+1})/(n+1)."""
    n = order
    t1 = float(torch.linalg.matrix_power(c, n + 1).trace())
    t2 = float(torch.linalg.matrix_power(c, n + 2).trace())
    return t1 / (n + 1) - t2 / (n + 2), t1 / (n + 1)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}d{s[1]}")
def test_symmetric_series_approaches_logdet(shape: tuple[int, int]) -> None:
    """Reference: exact log det(I + lam ẑẑ^T) from torch.linalg.slogdet, with rho = 0.6. Checks the two-sided
    alternating-series remainder bound (derived in `_alternating_remainder_bounds`), the cruder bound
    m rho^{n+1}/((n+1)(1-rho)), that |error| strictly decreases from order 2 to 8, and order 60 ~ exact."""
    m, d = shape
    z = _randn(m, d, seed=12)
    zh = _unit_rows(z)
    rho = 0.6
    lam = rho / float(torch.linalg.eigvalsh(zh @ zh.T).max())
    c = lam * zh @ zh.T
    assert _spectral_radius(c) == pytest.approx(rho, rel=1e-12)
    sign, logdet = torch.linalg.slogdet(torch.eye(m, dtype=F64) + c)
    assert sign == 1
    errors = []
    for order in range(2, 9):
        err = float(logdet - mec_taylor(z, z, lam, order))
        lo, hi = _alternating_remainder_bounds(c, order)
        assert lo - 1e-13 <= (-1) ** order * err <= hi + 1e-13, (order, err, lo, hi)
        assert abs(err) <= m * rho ** (order + 1) / ((order + 1) * (1 - rho))
        errors.append(abs(err))
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:], strict=False)), errors
    assert_close(mec_taylor(z, z, lam, 60), logdet, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}d{s[1]}")
def test_nonsymmetric_series_approaches_logdet(shape: tuple[int, int]) -> None:
    """Reference: for C_t = lam ẑ ẑ_t^T (not symmetric) with rho(C_t) = 0.7 < 1, Tr log(I + C) =
    sum_i log(1 + mu_i) (complex eigenvalues, torch.linalg.eigvals) = log det(I + C)
    (torch.linalg.slogdet, sign +1). The remainder is bounded by
    sum_i |mu_i|^{n+1}/((n+1)(1-|mu_i|)) <= m rho^{n+1}/((n+1)(1-rho))."""
    m, d = shape
    zh, zt = _unit_rows(_randn(m, d, seed=13)), _unit_rows(_randn(m, d, seed=14))
    rho = 0.7
    lam = rho / _spectral_radius(zh @ zt.T)
    c = lam * zh @ zt.T
    assert not torch.allclose(c, c.T)
    mu = torch.linalg.eigvals(c)
    assert float(mu.abs().max()) == pytest.approx(rho, rel=1e-10)
    sign, logdet = torch.linalg.slogdet(torch.eye(m, dtype=F64) + c)
    assert sign == 1  # Re(1 + mu) > 0 and conjugate pairs: det(I + C) > 0 when rho < 1
    log_eig = torch.log1p(mu).sum()
    assert abs(float(log_eig.imag)) < 1e-12
    assert_close(log_eig.real, logdet, rtol=1e-12, atol=1e-12)
    errors = []
    for order in range(2, 9):
        err = abs(float(logdet - mec_taylor(zh, zt, lam, order)))
        r = mu.abs()
        tight = float((r ** (order + 1) / ((order + 1) * (1 - r))).sum())
        crude = m * rho ** (order + 1) / ((order + 1) * (1 - rho))
        assert err <= tight + 1e-13 <= crude + 1e-13, (order, err, tight, crude)
        errors.append(err)
    assert errors[-1] < errors[0] / 10, errors
    assert_close(mec_taylor(zh, zt, lam, 80), logdet, rtol=1e-11, atol=1e-11)


# --- 4. comp_loss / mcr_loss scalings -------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}d{s[1]}")
@pytest.mark.parametrize("scale", ["mec", "paper"])
def test_comp_and_mcr_losses_equal_their_formulas(shape: tuple[int, int], scale: str) -> None:
    """Reference: `scaled_ref` (-T/(lam m) or -(m+d)/2 T) of `taylor_ref_matrix_power`; mcr_loss on
    T(ẑ, z1) + T(ẑ, z2). Orders 1..6, lam in {0.05, 0.3, 1.5}."""
    m, d = shape
    zh, z1, z2 = (_randn(m, d, seed=s) for s in (15, 16, 17))
    for lam in LAMS:
        for order in ORDERS:
            want_comp = scaled_ref(taylor_ref_matrix_power(zh, zh, lam, order), lam, m, d, scale)
            t12 = taylor_ref_matrix_power(zh, z1, lam, order) + taylor_ref_matrix_power(zh, z2, lam, order)
            msg = f"lam={lam} order={order}"
            assert_close(comp_loss(zh, lam, order, scale), want_comp, **TOL, msg=msg)
            assert_close(
                mcr_loss(zh, z1, z2, lam, order, scale), scaled_ref(t12, lam, m, d, scale), **TOL, msg=msg
            )


def test_default_scale_is_mec_and_paper_is_documented_multiple() -> None:
    """Reference: the documented mapping paper = (m + d) * lam * m / 2 * mec; default scale = "mec",
    default order = 4 (`taylor_ref_matrix_power` with order 4)."""
    m, d, lam = 6, 10, 0.2
    zh, z1, z2 = (_randn(m, d, seed=s) for s in (18, 19, 20))
    factor = (m + d) * lam * m / 2
    for order in (1, 2, 4):
        assert_close(comp_loss(zh, lam, order, "paper"), factor * comp_loss(zh, lam, order, "mec"), **TOL)
        assert_close(
            mcr_loss(zh, z1, z2, lam, order, "paper"), factor * mcr_loss(zh, z1, z2, lam, order), **TOL
        )
    assert_close(comp_loss(zh, lam), -taylor_ref_matrix_power(zh, zh, lam, 4) / (lam * m), **TOL)
    assert_close(comp_loss(zh, lam), comp_loss(zh, lam, 4, "mec"), rtol=0, atol=0)
    assert_close(mcr_loss(zh, z1, z2, lam), mcr_loss(zh, z1, z2, lam, 4, "mec"), rtol=0, atol=0)


# --- 5. first order in "mec" scale ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"m{s[0]}d{s[1]}")
def test_first_order_mec_scale_is_minus_mean_cosine(shape: tuple[int, int]) -> None:
    """Reference: order 1 gives -Tr(lam ẑẑ^T)/(lam m) = -1 (unit rows) for comp_loss, and
    -(mean_i cos(ẑ_i, z1_i) + mean_i cos(ẑ_i, z2_i)) for mcr_loss, cosines computed row by row in Python."""
    m, d = shape
    zh, z1, z2 = (_randn(m, d, seed=s) for s in (21, 22, 23))
    for lam in LAMS:
        assert_close(comp_loss(zh, lam, 1), torch.tensor(-1.0, dtype=F64), **TOL)

        def mean_cos(x: torch.Tensor, y: torch.Tensor) -> float:
            rows = [float(x[i] @ y[i]) / math.sqrt(float(x[i] @ x[i]) * float(y[i] @ y[i])) for i in range(m)]
            return sum(rows) / m

        want = -(mean_cos(zh, z1) + mean_cos(zh, z2))
        assert_close(mcr_loss(zh, z1, z2, lam, 1), torch.tensor(want, dtype=F64), **TOL)


# --- 6. gradients -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5), (5, 3)], ids=["m<d", "m>d"])
def test_gradcheck(shape: tuple[int, int]) -> None:
    """Reference: finite differences (torch.autograd.gradcheck, float64) for mec_taylor, comp_loss and
    mcr_loss in both scales; plus autograd gradients equal those of `taylor_ref_matrix_power`."""
    m, d = shape
    a, b, c = (_randn(m, d, seed=s).requires_grad_() for s in (24, 25, 26))
    lam = 0.4
    assert torch.autograd.gradcheck(lambda x, y: mec_taylor(x, y, lam, 4), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: mec_taylor(x, y, lam, 5), (a, b))
    for scale in ("mec", "paper"):
        assert torch.autograd.gradcheck(lambda x, s=scale: comp_loss(x, lam, 4, s), (a,))
        assert torch.autograd.gradcheck(lambda x, y, z, s=scale: mcr_loss(x, y, z, lam, 3, s), (a, b, c))
    for order in (2, 4, 6):
        got = torch.autograd.grad(mec_taylor(a, b, lam, order), (a, b))
        want = torch.autograd.grad(taylor_ref_matrix_power(a, b, lam, order), (a, b))
        for g, w in zip(got, want, strict=True):
            assert_close(g, w, rtol=1e-11, atol=1e-12)


# --- 7. dtypes and autocast -------------------------------------------------------------------------------


def test_float32_in_float32_out() -> None:
    """Reference: the float64 `taylor_ref_matrix_power` value (rtol 1e-5)."""
    for m, d in SHAPES:
        a, b = _randn(m, d, seed=27, dtype=torch.float32), _randn(m, d, seed=28, dtype=torch.float32)
        got = mec_taylor(a, b, 0.3, 4)
        assert got.dtype == torch.float32
        assert_close(
            got.double(), taylor_ref_matrix_power(a.double(), b.double(), 0.3, 4), rtol=1e-5, atol=1e-6
        )
        assert comp_loss(a, 0.3).dtype == torch.float32
        assert mcr_loss(a, b, b, 0.3, 4, "paper").dtype == torch.float32


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_inputs_are_computed_in_float32(low: torch.dtype) -> None:
    """Reference: the same (exactly representable) values upcast to float32 (bit-equal result) and the float64
    `taylor_ref_matrix_power` of those values (rtol 1e-5). A bf16/fp16 computation is off by ~1e-2."""
    m, d, lam = 16, 8, 0.5
    a, b, c = (_randn(m, d, seed=s, dtype=low) for s in (29, 30, 31))
    got = mec_taylor(a, b, lam, 4)
    assert got.dtype == torch.float32
    assert_close(got, mec_taylor(a.float(), b.float(), lam, 4), rtol=0, atol=0)
    assert_close(got.double(), taylor_ref_matrix_power(a.double(), b.double(), lam, 4), rtol=1e-5, atol=1e-6)
    for scale in ("mec", "paper"):
        cl = comp_loss(a, lam, 4, scale)
        assert cl.dtype == torch.float32
        want = scaled_ref(taylor_ref_matrix_power(a.double(), a.double(), lam, 4), lam, m, d, scale)
        assert_close(cl.double(), want, rtol=1e-5, atol=1e-6)
        ml = mcr_loss(a, b, c, lam, 4, scale)
        assert ml.dtype == torch.float32
        assert_close(ml, mcr_loss(a.float(), b.float(), c.float(), lam, 4, scale), rtol=0, atol=0)


def test_autocast_bf16_is_disabled_inside() -> None:
    """Reference: the float32 result computed outside autocast (bit-equal), float32 result dtype, and
    float32 gradients, under torch.autocast("cpu", dtype=torch.bfloat16)."""
    m, d, lam = 16, 8, 0.5
    a, b, c = (_randn(m, d, seed=s, dtype=torch.float32) for s in (32, 33, 34))
    plain = (mec_taylor(a, b, lam, 4), comp_loss(a, lam, 4), mcr_loss(a, b, c, lam, 4, "paper"))
    x = a.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # sanity: autocast is really active here (a bare matmul would be bf16)
        assert (a @ b.T).dtype == torch.bfloat16
        under = (mec_taylor(a, b, lam, 4), comp_loss(a, lam, 4), mcr_loss(a, b, c, lam, 4, "paper"))
        loss = comp_loss(x, lam, 4)
    for p, u in zip(plain, under, strict=True):
        assert u.dtype == torch.float32
        assert_close(u, p, rtol=0, atol=0)
    loss.backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    y = a.clone().requires_grad_()
    comp_loss(y, lam, 4).backward()
    assert_close(x.grad, y.grad, rtol=0, atol=0)


# --- 8. input errors --------------------------------------------------------------------------------------


def _raises_naming(fn, *args, text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(text)):
        fn(*args)


def test_bad_shapes_raise_value_error_naming_the_shapes() -> None:
    """Reference: the contract (2-D, equal shapes) -> ValueError whose message contains the bad shape."""
    z, v = _randn(4, 3, seed=35), torch.ones(4, dtype=F64)
    _raises_naming(mec_taylor, v, z, 0.1, 4, text="(4,)")
    _raises_naming(mec_taylor, z, v, 0.1, 4, text="(4,)")
    _raises_naming(mec_taylor, z[None], z[None], 0.1, 4, text="(1, 4, 3)")
    _raises_naming(comp_loss, v, 0.1, text="(4,)")
    _raises_naming(mcr_loss, v, z, z, 0.1, text="(4,)")
    _raises_naming(mec_taylor, z, z[:3], 0.1, 4, text="(3, 3)")
    _raises_naming(mec_taylor, z, z[:, :2], 0.1, 4, text="(4, 2)")
    _raises_naming(mcr_loss, z, z[:2], z, 0.1, text="(2, 3)")
    _raises_naming(mcr_loss, z, z, z[:, :1], 0.1, text="(4, 1)")


@pytest.mark.parametrize("order", [0, -2, 2.0, 4.5, True, "4", None])
def test_bad_order_raises_value_error_naming_it(order: object) -> None:
    """Reference: the contract (order an int >= 1) -> ValueError whose message contains repr(order)."""
    z = _randn(4, 3, seed=36)
    _raises_naming(mec_taylor, z, z, 0.1, order, text=repr(order))
    _raises_naming(comp_loss, z, 0.1, order, text=repr(order))
    _raises_naming(mcr_loss, z, z, z, 0.1, order, text=repr(order))


@pytest.mark.parametrize("lam", [0.0, -0.1, -3, float("nan")])
def test_bad_lam_raises_value_error_naming_it(lam: float) -> None:
    """Reference: the contract (lam > 0) -> ValueError whose message contains repr(lam)."""
    z = _randn(4, 3, seed=37)
    _raises_naming(mec_taylor, z, z, lam, 4, text=repr(lam))
    _raises_naming(comp_loss, z, lam, 4, text=repr(lam))
    _raises_naming(mcr_loss, z, z, z, lam, 4, text=repr(lam))


@pytest.mark.parametrize("scale", ["MEC", "Paper", "", "log"])
def test_unknown_scale_raises_value_error_naming_it(scale: str) -> None:
    """Reference: the contract (scale in {"mec", "paper"}) -> ValueError naming repr(scale)."""
    z = _randn(4, 3, seed=38)
    _raises_naming(comp_loss, z, 0.1, 4, scale, text=repr(scale))
    _raises_naming(mcr_loss, z, z, z, 0.1, 4, scale, text=repr(scale))


# --- 9. lambda and its warm-up ----------------------------------------------------------------------------


def test_mec_lambda() -> None:
    """Reference: lam = d / (m eps^2), eps^2 = 64 by default (MEC `lamda = 1 / (m * eps / d)`)."""
    assert mec_lambda(256, 512) == pytest.approx(512 / (256 * 64), rel=1e-15)
    assert mec_lambda(256, 512) == pytest.approx(1 / 32, rel=1e-15)
    assert mec_lambda(128, 2048, eps_sq=0.5) == pytest.approx(2048 / 64, rel=1e-15)
    assert mec_lambda(7, 3, 2.0) == pytest.approx(3 / 14, rel=1e-15)
    for bad in [(0, 8, 64.0), (8, 0, 64.0), (8, 8, 0.0), (8, 8, -1.0)]:
        with pytest.raises(ValueError):
            mec_lambda(*bad)


def lambda_ref_mec_scheduler(warmup_steps: int, total_steps: int, lam: float) -> np.ndarray:
    """MEC main_pretrain.py `lamda_scheduler(8/lam, 1/lam, ...)`: np.linspace(8/lam, 1/lam, warmup_iters),
    then 1/lam constant; the loss uses lam = 1 / lamda_inv."""
    warm = np.linspace(8 / lam, 1 / lam, warmup_steps) if warmup_steps > 0 else np.array([])
    inv = np.concatenate([warm, np.full(total_steps - len(warm), 1 / lam)])
    return 1.0 / inv


@pytest.mark.parametrize("warmup", [0, 1, 2, 5, 37])
def test_lambda_at_matches_mec_scheduler(warmup: int) -> None:
    """Reference: `lambda_ref_mec_scheduler` (numpy linspace of 1/lam); endpoints lam/8 at step 0 and lam at
    step warmup-1 (warmup >= 2), lam from step warmup on, strictly increasing during the warm-up."""
    lam = 0.0371
    total = warmup + 6
    ref = lambda_ref_mec_scheduler(warmup, total, lam)
    got = np.array([lambda_at(s, warmup, lam) for s in range(total)])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
    if warmup >= 1:
        assert got[0] == pytest.approx(lam / 8, rel=1e-14)
        assert np.all(np.diff(got[:warmup]) > 0)
    if warmup >= 2:
        assert got[warmup - 1] == pytest.approx(lam, rel=1e-14)
        # 1/lam is linear in the step: constant differences
        np.testing.assert_allclose(np.diff(1 / got[:warmup]), -7 / lam / (warmup - 1), rtol=1e-9)
    assert all(v == lam for v in got[warmup:])
    assert lambda_at(10**6, warmup, lam) == lam
