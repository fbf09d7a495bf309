"""Maximum-entropy-coding losses of CompMod: the truncated log-det series and its two uses.

References: Eq. 6 (L_comp) and Eq. 7 (L_mcr) of the CompMod paper (Guo et al., AAAI 2024), which take
the Taylor series of Maximum Entropy Coding (MEC, Liu et al., NeurIPS 2022, Eq. 2 and the official
code's `loss_func`). With rows of A and B L2-normalised and C = lam * A B^T:

    T_order(A, B) = sum_{k=1..order} (-1)^{k+1} / k * Tr(C^k)      (= log det(I + C) when rho(C) < 1)

Scaling (`scale`): the paper writes -mu * T with mu = (m + d) / 2; MEC's code optimises -T / (lam * m)
(mu is only logged), whose first-order term is minus the mean cosine similarity. `mec` is the default;
lambda1/lambda2 in configs refer to it. `paper` = (m + d) * lam * m / 2 times `mec`.

All three are computed in float32 or wider with autocast off (bf16 gradients of these series are off by
20-200 % near collapse; fp16 overflows).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Scale = Literal["mec", "paper"]
SCALES = ("mec", "paper")


def _check(a: torch.Tensor, b: torch.Tensor, lam: float, order: int) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(
            f"mec_taylor expects 2-D (m, d) inputs, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape != b.shape:
        raise ValueError(
            f"mec_taylor expects inputs of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < 1:
        raise ValueError("mec_taylor needs at least one row")
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order must be an integer >= 1, got {order!r}")
    if not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam!r}")


def mec_taylor(a: torch.Tensor, b: torch.Tensor, lam: float, order: int = 4) -> torch.Tensor:
    """sum_{k=1..order} (-1)^{k+1}/k * Tr((lam * a_hat @ b_hat.T)^k), a_hat/b_hat the row-normalised inputs.

    a, b: (m, d). Returns a scalar. Tr(C^k) is the same for the m x m matrix lam * a_hat b_hat^T and the
    d x d matrix lam * b_hat^T a_hat; the smaller one is used. Tr(C^k) for the last power is taken as a
    Hadamard sum (Tr(XY) = sum(X * Y^T)), so order 4 needs one cubic matmul.
    """
    _check(a, b, lam, order)
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    with torch.autocast(device_type=a.device.type, enabled=False):
        a_hat = F.normalize(a.to(dtype), dim=1)
        b_hat = F.normalize(b.to(dtype), dim=1)
        m, d = a.shape
        c = lam * (a_hat @ b_hat.T if m <= d else b_hat.T @ a_hat)
        traces = _power_traces(c, order)
        total = c.new_zeros(())
        for k, tr in enumerate(traces, start=1):
            total = total + ((-1) ** (k + 1) / k) * tr
        return total


def _power_traces(c: torch.Tensor, order: int) -> list[torch.Tensor]:
    """[Tr(C), Tr(C^2), ..., Tr(C^order)] with about order/2 matrix products."""
    ct = c.T
    powers = {1: c}  # C^j for j <= ceil(order / 2)
    half = (order + 1) // 2
    for j in range(2, half + 1):
        powers[j] = powers[j - 1] @ c
    traces = []
    for k in range(1, order + 1):
        if k == 1:
            traces.append(torch.diagonal(c).sum())
            continue
        i = k // 2
        j = k - i  # Tr(C^k) = Tr(C^i C^j) = sum(C^i * (C^j)^T)
        traces.append((powers[i] * (powers[j].T if j > 1 else ct)).sum())
    return traces


def _scaled(t: torch.Tensor, lam: float, m: int, d: int, scale: str) -> torch.Tensor:
    if scale == "mec":
        return -t / (lam * m)
    if scale == "paper":
        return -(m + d) / 2 * t
    raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")


def comp_loss(z_hat: torch.Tensor, lam: float, order: int = 4, scale: Scale = "mec") -> torch.Tensor:
    """L_comp (Eq. 6): minus the coding length of the fused embedding, keeping it high-entropy.

    z_hat: (m, d). `mec`: -T(z_hat, z_hat) / (lam * m); `paper`: -(m + d)/2 * T(z_hat, z_hat).
    """
    m, d = z_hat.shape if z_hat.ndim == 2 else (0, 0)
    return _scaled(mec_taylor(z_hat, z_hat, lam, order), lam, m, d, scale)


def mcr_loss(
    z_hat: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, lam: float, order: int = 4, scale: Scale = "mec"
) -> torch.Tensor:
    """L_mcr (Eq. 7): pulls each view's embedding towards the comprehensive one.

    z_hat, z1, z2: (m, d). The `comp_loss` scaling applied to T(z_hat, z1) + T(z_hat, z2).
    """
    m, d = z_hat.shape if z_hat.ndim == 2 else (0, 0)
    total = mec_taylor(z_hat, z1, lam, order) + mec_taylor(z_hat, z2, lam, order)
    return _scaled(total, lam, m, d, scale)


def mec_lambda(m: int, d: int, eps_sq: float = 64.0) -> float:
    """lam = d / (m * eps^2) (MEC's `lamda = 1 / (m * eps / d)`, eps^2 = 64 by default)."""
    if m < 1 or d < 1 or not eps_sq > 0:
        raise ValueError(f"mec_lambda needs m >= 1, d >= 1, eps_sq > 0; got m={m}, d={d}, eps_sq={eps_sq}")
    return d / (m * eps_sq)


def warmed_lambda(lam: float, done: float) -> float:
    """MEC's warm-up at fraction `done` in [0, 1] of it: 1/lam linear from 8/lam to 1/lam, i.e. lam / 8
    at the start and lam at the end (MEC main_pretrain.py `lamda_scheduler`). The one formula of the
    MEC method's warm-up (by training progress) and CompMod's (by step, `lambda_at`)."""
    return lam / (8.0 - 7.0 * min(1.0, max(0.0, done)))


def lambda_at(step: int, warmup_steps: int, lam: float) -> float:
    """`warmed_lambda` at step `step` of a `warmup_steps`-step warm-up (lam from step warmup_steps on)."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return lam
    return warmed_lambda(lam, step / max(1, warmup_steps - 1))


def mec_loss(
    p1: torch.Tensor, p2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, lam: float, order: int = 4
) -> torch.Tensor:
    """MEC's own training loss (Liu et al. 2022, Eq. 2; official main_pretrain.py `train` and `loss_func`).

    p1, p2: (m, d) online predictions of two views; t1, t2: (m, d) teacher projections, used as given (the
    method detaches them). Symmetric, each view's prediction against the other view's teacher output:
    -(T(t1, p2) + T(t2, p1)) / (2 * lam * m) with T = `mec_taylor`: the code's
    `-(loss_func(p1, z2) + loss_func(p2, z1)) * 0.5 / m * lamda_inv`, where the code calls the teacher
    outputs p and the predictions z; the `comp_loss` ("mec") scaling, averaged over both directions.
    """
    for name, t in (("p2", p2), ("t1", t1), ("t2", t2)):
        if t.shape != p1.shape:
            raise ValueError(
                f"mec_loss expects inputs of equal shape, got p1 {tuple(p1.shape)}, {name} {tuple(t.shape)}"
            )
    m, d = p1.shape if p1.ndim == 2 else (0, 0)
    total = mec_taylor(t1, p2, lam, order) + mec_taylor(t2, p1, lam, order)
    return _scaled(total, lam, m, d, "mec") / 2
