"""How much of its space a representation uses: effective rank and coding rate of a feature matrix.

The CompMod paper argues that plain SSL keeps only what the two views share, and that its regularizer
makes the backbone features h and projections z more comprehensive. These two spectral measures give that
argument a number, for h and z of the same images:

- effective rank (Roy & Vetterli 2007; RankMe, Garrido et al. 2023): exp of the entropy of the normalised
  singular values, a continuous count of the directions the features spread over (1 ... min(N, D));
- coding rate (the R(Z, eps) of MCR^2, Yu et al. 2020, after Ma et al. 2007): the nats needed to code the
  L2-normalised features up to distortion eps, the log-det that MEC's and CompMod's losses expand in series.

Both are computed in float64 on the detached input (any float dtype and device), and returned as floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from compmod.methods import SSLMethod


def _as_float64(x: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} expects a 2-D (N, D) tensor; got {shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{who} needs at least one row and one column; got shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{who} expects a real tensor; got {x.dtype}")
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{who}: the input holds NaN or infinite values")
    return x


def effective_rank(x: torch.Tensor, centre: bool = True, eps: float = 0.0) -> float:
    """Effective rank of the (N, D) matrix x (Roy & Vetterli 2007, "The effective rank: a measure of
    effective dimensionality", EUSIPCO).

    With singular values s_k of x (of x minus its column means when `centre`), p_k = s_k / sum(s) + eps
    and erank = exp(-sum_k p_k log p_k) (0 log 0 = 0). Lies in [1, rank(x)] for eps = 0; equals k when
    the k non-zero singular values are equal. Invariant to scaling x and to rotating its columns (x @ Q,
    Q orthogonal); with `centre` also to translating the rows (adding one vector to every row).

    `centre=True` (default) measures the spread of the features around their mean, so a shared offset
    (common in ReLU features) does not count as a direction. RankMe (Garrido et al. 2023) is the
    uncentred variant with eps = 1e-7: `effective_rank(x, centre=False, eps=1e-7)`; for non-degenerate
    spectra the eps changes the value by well under 1e-4.

    Singular values below max(N, D) * eps_dtype * ||x||_F, with eps_dtype the machine epsilon of x's
    own dtype (the rounding noise of the input; the tolerance of `numpy.linalg.matrix_rank`, taken on x
    before centring), count as 0: a float32 rank-one product or equal rows after centring gives no
    spurious directions.

    x: (N, D). Returns a float; 0.0 for a matrix with no non-zero singular value (x = 0, or all rows
    equal when `centre`), the fully collapsed case where the entropy is undefined.
    """
    unit = torch.finfo(x.dtype if x.is_floating_point() else torch.float64).eps
    x = _as_float64(x, "effective_rank")
    if not eps >= 0:
        raise ValueError(f"effective_rank: eps must be >= 0; got {eps!r}")
    tol = max(x.shape) * unit * torch.linalg.matrix_norm(x)
    if centre:
        x = x - x.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(x)
    s = torch.where(s > tol, s, torch.zeros_like(s))
    total = s.sum()
    if not bool(total > 0):
        return 0.0
    p = s / total + eps
    entropy = -torch.special.xlogy(p, p).sum()
    return float(torch.exp(entropy))


def coding_rate(x: torch.Tensor, eps: float = 0.5) -> float:
    """Coding rate R of the rows of x (MCR^2, Yu et al. 2020; Ma et al. 2007), in nats.

    With Z the (m, d) matrix of the rows of x L2-normalised (zero rows stay zero), as MCR^2 does before
    computing it:

        R(Z) = 1/2 logdet(I_d + d / (m eps^2) Z^T Z) = 1/2 sum_i log(1 + d / (m eps^2) sigma_i^2),

    the sigma_i the singular values of Z. By Sylvester's identity det(I_d + a Z^T Z) = det(I_m + a Z Z^T),
    so the smaller of the two Gram matrices is used, factorised by Cholesky (I + a Gram is symmetric
    positive definite): logdet = 2 sum log diag(L). Lies between 0 (every row zero) and
    k/2 log(1 + d / (k eps^2)), k = min(m, d), reached when Z^T Z has k equal non-zero eigenvalues (e.g.
    orthonormal rows); m identical rows give 1/2 log(1 + d / eps^2).
    `eps` is the distortion eps itself (eps^2 enters the formula; codes that take an `eps` argument
    sometimes mean eps^2): the value depends on it, so compare runs at the same eps only.

    x: (m, d). Returns a float.
    """
    z = _as_float64(x, "coding_rate")
    if not eps > 0 or not math.isfinite(eps):
        raise ValueError(f"coding_rate: eps must be a finite number > 0; got {eps!r}")
    m, d = z.shape
    z = F.normalize(z, dim=1)
    gram = z @ z.T if m <= d else z.T @ z
    a = d / (m * eps**2)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    chol = torch.linalg.cholesky(eye + a * gram)
    return float(torch.log(torch.diagonal(chol)).sum())


def representation_stats(h: torch.Tensor, z: torch.Tensor, eps: float = 0.5) -> dict[str, float]:
    """Effective rank (centred) and coding rate (distortion `eps`) of backbone features h (N, D_h) and
    projections z (N, D_z) of the same N images.

    Returns {"h_effective_rank", "z_effective_rank", "h_coding_rate", "z_coding_rate"}.
    """
    if h.ndim == 2 and z.ndim == 2 and h.shape[0] != z.shape[0]:
        raise ValueError(
            "representation_stats: h and z must hold the same rows; "
            f"got {tuple(h.shape)} and {tuple(z.shape)}"
        )
    return {
        "h_effective_rank": effective_rank(h),
        "z_effective_rank": effective_rank(z),
        "h_coding_rate": coding_rate(h, eps),
        "z_coding_rate": coding_rate(z, eps),
    }


def embedding_stats(
    method: SSLMethod,
    images: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """`representation_stats` of a method's h and z (`method.embed`, frozen, eval mode) on `images`."""
    from compmod.eval.features import extract_features

    feats = extract_features(method.embed, images, transform, batch_size=batch_size, device=device)
    return representation_stats(feats[:, : method.feat_dim], feats[:, method.feat_dim :])
