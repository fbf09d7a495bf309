"""Exact k-nearest-neighbour search by cosine similarity, fast: a certified shortlist from a bf16 (or
float32) GEMM, re-ranked exactly. The similarity and tie rule it implements are those of `compmod.eval.knn`;
`nearest_neighbours` explains how the shortlist is certified.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from compmod.eval.features import check_feature_pair

PRECISIONS = ("auto", "fp32", "bf16")
SHORTLIST_BF16 = (64, 512)  # shortlist lengths (at least k + 1) tried in turn on the bf16 similarities
SHORTLIST_FP32 = 8  # the float32 shortlist has k + 8 samples
MARGIN = 2.0**-22 + 1e-12  # float32 rounding of similarities <= ~1 (ulp 2^-23) plus the float64 error


class Neighbours(NamedTuple):
    """Result of `nearest_neighbours`: (M, k) int64 indices and float64 similarities, nearest first."""

    indices: Tensor
    similarities: Tensor
    precision: str  # the shortlist precision used: "bf16" or "fp32"
    fp32_rows: int  # bf16 shortlist not certified: the query's row was recomputed in float32
    exact_rows: int  # float32 shortlist not certified either: the whole row was computed in float64


def default_precision(device: torch.device) -> str:
    """ "bf16" on CPUs with native bf16 dot products (AVX512-BF16 or AMX) and oneDNN, else "fp32".

    Measured on a 2-core AMD EPYC with AVX512-BF16 (benchmarks/results/knn.md): the bf16 GEMM runs ~3.5x
    faster than float32 (MKL). Without native bf16 oneDNN emulates it, and on CUDA float32 is the default
    (cuBLAS may reduce bf16 products in reduced precision, which would void the bound).
    """
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return "fp32"
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's CPU-feature probes
    native = any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return "bf16" if native else "fp32"


def nearest_neighbours(
    train_feats: Tensor, test_feats: Tensor, k: int, precision: str = "auto", chunk_size: int = 1024
) -> Neighbours:
    """The exact k nearest `train_feats` of each of `test_feats` under the rule of the module docstring.

    Per chunk of queries a GEMM gives approximate similarities a with a proven per-query bound
    |a - s| <= delta (s: exact similarity); each query keeps its top-K' of a (K' = `SHORTLIST_*`).
    Every sample with a < T = a_(k) - 2 delta - MARGIN has s < a_(k) - delta - MARGIN <= s_(k) - MARGIN
    (k samples have s >= a - delta >= a_(k) - delta), so it cannot be among the k nearest nor tie with
    them after rounding to float32. If the K'-th shortlisted a is below T the shortlist is certified and
    its members above T are re-ranked: a float32 dot product each (bound delta_32, shrinking the set the
    same way to ~k), then float64 for the survivors, ordered by the rule. A query whose shortlist is not
    certified is retried: bf16 with K' = 64, then 512 -> its float32 GEMM row -> its whole row in float64.

    Bounds, with u = 2^-24 and gamma = d u / (1 - d u) for float32 accumulation over d terms:

    * float32 GEMM (and the re-rank): delta_32 = gamma |q| max|x| (inner products, Higham 2002, Sec. 3.1;
      |q|, |x| ~ 1); on CUDA with TF32 allowed the GEMM gets 2 2^-10 more (its rows then mostly end in
      float64: keep `torch.backends.cuda.matmul.allow_tf32` off for speed);
    * bf16 GEMM of q~ = bf16(q), x~ = bf16(x) with float32 accumulation (oneDNN on AVX512-BF16 / AMX:
      products of bf16 are exact in float32): q~.x~ - q.x = -q~.e_x - e_q.x with e = v - v~, so by
      Cauchy-Schwarz |q~.x~ - q.x| <= |q~| max|e_x| + |e_q| max|x| (the actual rounding errors, ~0.45
      2^-8 each, not the worst case 2^-8); plus gamma |q~| max|x~| for the accumulation; plus the bf16
      rounding of the output, at most half an ulp: 2^-9 when the largest a of the row is < 1 (all |v| < 1),
      else 2^-8 |v| <= 2^-7. Rows whose T <= -0.99 are not certified (negative a with |a| >= 1 could
      round by more). A factor 1.01 covers the float32 evaluation of the norms.

    Args:
        train_feats: (N, d) features (any float dtype; normalised in float32).
        test_feats: (M, d) features on the same device.
        k: neighbours per query, 1 <= k <= N.
        precision: "auto" (`default_precision`), "fp32" or "bf16": the GEMM of the shortlist only; the
            result is the same for every precision.
        chunk_size: queries per similarity block; memory is O(chunk_size * N).

    Returns:
        `Neighbours` with (M, k) indices and float64 similarities, nearest first, on the features' device.
    """
    _check_search(train_feats, test_feats, chunk_size)
    if not 1 <= k <= train_feats.shape[0]:
        raise ValueError(f"k must be in [1, {train_feats.shape[0]}]; got {k}")
    device = train_feats.device
    precision = _resolve_precision(precision, device)
    index = _Index(F.normalize(train_feats.to(torch.float32), dim=1), precision)
    test = F.normalize(test_feats.to(torch.float32), dim=1)
    chunks = [_search_chunk(index, q, k) for q in test.split(chunk_size)]
    return Neighbours(
        torch.cat([c[0] for c in chunks]),
        torch.cat([c[1] for c in chunks]),
        precision,
        sum(c[2] for c in chunks),
        sum(c[3] for c in chunks),
    )


class _Index:
    """Normalised float32 training vectors, their bf16 copy, the norms the bounds need, reused buffers."""

    def __init__(self, train: Tensor, precision: str) -> None:
        self.train, self.precision = train, precision
        n, d = train.shape
        self.gamma = d * 2.0**-24 / (1 - d * 2.0**-24)
        self.norm_max = train.norm(dim=1).max().item() * 1.01
        # Reused similarity blocks and gather buffers: fresh large tensors cost page faults on CPU.
        self.blocks: dict[torch.dtype, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        if precision == "bf16":
            self.train_bf16 = torch.empty(n, d, dtype=torch.bfloat16, device=train.device)
            err_max = norm_max = 0.0
            for x, xb in zip(train.split(4096), self.train_bf16.split(4096), strict=True):  # cache-sized
                xb.copy_(x)
                err_max = max(err_max, (x - xb.float()).norm(dim=1).max().item())
                norm_max = max(norm_max, xb.float().norm(dim=1).max().item())
            self.err_max, self.norm_bf16_max = 1.01 * err_max, 1.01 * norm_max

    def fp32_delta(self, q: Tensor, gemm: bool) -> Tensor:
        """(B,) bound on the error of float32 dot products; a CUDA GEMM allowed to use TF32 rounds inputs
        to 10-bit mantissas (relative error <= 2^-10 even when truncating): 2 2^-10 more."""
        tf32 = gemm and q.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
        return 1.01 * (self.gamma + (2.0**-9 if tf32 else 0.0)) * self.norm_max * q.norm(dim=1)

    def bf16_delta(self, q: Tensor, qb: Tensor) -> Tensor:
        """(B,) bound on |q~.x~ - q.x| + float32 accumulation, all x; the output rounding comes on top."""
        q_err, qb_norm = (q - qb.float()).norm(dim=1), qb.float().norm(dim=1)
        return 1.01 * (
            qb_norm * self.err_max + q_err * self.norm_max + self.gamma * qb_norm * self.norm_bf16_max
        )

    def buffer(self, name: str, rows: int) -> Tensor:
        """A reused (rows, d) float32 buffer."""
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < rows:
            buf = self.buffers[name] = self.train.new_empty(max(rows, 4096), self.train.shape[1])
        return buf[:rows]

    def block(self, rows: int, dtype: torch.dtype) -> Tensor:
        n = self.train.shape[0]
        buf = self.blocks.get(dtype)
        if buf is None or buf.numel() < rows * n:
            buf = self.blocks[dtype] = torch.empty(rows * n, dtype=dtype, device=self.train.device)
        return buf[: rows * n].view(rows, n)


def _search_chunk(index: _Index, q: Tensor, k: int) -> tuple[Tensor, Tensor, int, int]:
    """(B, d) unit queries -> (B, k) indices, (B, k) float64 similarities, #float32 rows, #float64 rows."""
    idx = torch.zeros(q.shape[0], k, dtype=torch.long, device=q.device)
    sims = torch.zeros(q.shape[0], k, dtype=torch.float64, device=q.device)
    todo = torch.arange(q.shape[0], device=q.device)
    fp32_rows = 0
    if index.precision == "bf16":
        qb = q.to(torch.bfloat16)
        approx = torch.mm(qb, index.train_bf16.T, out=index.block(q.shape[0], torch.bfloat16))
        delta = index.bf16_delta(q, qb)
        block = approx
        for length in SHORTLIST_BF16:  # a longer shortlist for the rows the shorter one did not certify
            todo = _refine(index, q, block, todo, delta[todo], max(k + 1, length), k, idx, sims, True)
            if not todo.numel():
                break
            block = approx[todo]  # (index_select of bf16 rows is ~100x slower on CPU)
        fp32_rows = todo.numel()
    if not todo.numel():
        return idx, sims, fp32_rows, 0
    block = torch.mm(q[todo], index.train.T, out=index.block(todo.numel(), torch.float32))
    delta = index.fp32_delta(q[todo], gemm=True)
    todo = _refine(index, q, block, todo, delta, k + SHORTLIST_FP32, k, idx, sims, False)
    if todo.numel():  # more than K' samples within ~1e-4 of the k-th (duplicates): rows in float64
        n = index.train.shape[0]
        exact = torch.cat([q[todo].double() @ x.double().T for x in index.train.split(8192)], dim=1)
        idx[todo], sims[todo] = _order(torch.arange(n, device=q.device).expand(todo.numel(), n), exact, k)
    return idx, sims, fp32_rows, todo.numel()


def _refine(
    index: _Index,
    q: Tensor,
    approx: Tensor,
    rows: Tensor,
    delta: Tensor,
    length: int,
    k: int,
    idx: Tensor,
    sims: Tensor,
    bf16: bool,
) -> Tensor:
    """Shortlist the (R, N) `approx` of queries `q[rows]`, re-rank the certified rows into `idx`, `sims`.

    Returns the rows whose shortlist was not certified.
    """
    cand, a, ok = _shortlist(approx, k, length, delta, bf16)
    done = _flat_true(ok)
    if done.numel():
        cand, a, qs = cand.index_select(0, done), a.index_select(0, done), q[rows[done]]
        if bf16:  # float32 dot products of the shortlisted samples above the threshold
            a, delta = _dots(index, qs, cand, a > -torch.inf), index.fp32_delta(qs, gemm=False)
        else:
            delta = delta.index_select(0, done)
        idx[rows[done]], sims[rows[done]] = _finish(index, qs, cand, a, delta, k)
    return rows[_flat_true(~ok)]


def _shortlist(approx: Tensor, k: int, length: int, delta: Tensor, bf16: bool) -> tuple[Tensor, ...]:
    """Top-`length` of (R, N) `approx`: indices, float32 values (-inf below the threshold T), certified."""
    length = min(length, approx.shape[1])
    vals, cand = approx.topk(length, dim=1)
    vals = vals.float()
    if bf16:  # half an ulp of the bf16 output: 2^-9 below 1 in magnitude, else at most 2^-7
        delta = delta + torch.where(vals[:, 0] < 1, 2.0**-9, 2.0**-7)
    thresh = vals[:, k - 1] - 2 * delta - MARGIN
    ok = vals[:, -1] < thresh
    if bf16:
        ok &= thresh > -0.99
    if length == approx.shape[1]:
        ok[:] = True
    return cand, vals.masked_fill_(vals < thresh[:, None], -torch.inf), ok


def _dots(index: _Index, q: Tensor, cand: Tensor, keep: Tensor) -> Tensor:
    """(R, K) float32 dot products of queries with their candidates where `keep`, -inf elsewhere."""
    flat = _flat_true(keep)
    rows, queries = index.buffer("rows", flat.numel()), index.buffer("queries", flat.numel())
    torch.index_select(index.train, 0, cand.flatten().index_select(0, flat), out=rows)
    torch.index_select(q, 0, flat.div(cand.shape[1], rounding_mode="floor"), out=queries)
    out = torch.full(cand.shape, -torch.inf, device=q.device)
    return out.view(-1).index_copy_(0, flat, rows.mul_(queries).sum(1)).view(cand.shape)


def _finish(
    index: _Index, q: Tensor, cand: Tensor, a32: Tensor, delta: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Float32 values with error <= delta -> keep those within 2 delta of the k-th -> float64 -> order."""
    kth = a32.topk(k, dim=1).values[:, -1]
    flat = _flat_true(a32 >= (kth - 2 * delta - MARGIN)[:, None])
    pairs = index.train.index_select(0, cand.flatten().index_select(0, flat)).double()
    queries = q.index_select(0, flat.div(cand.shape[1], rounding_mode="floor")).double()
    exact = torch.full(a32.shape, -torch.inf, dtype=torch.float64, device=q.device)
    exact.view(-1).index_copy_(0, flat, (pairs * queries).sum(1))
    return _order(cand, exact, k)


def _flat_true(mask: Tensor) -> Tensor:
    """Flat indices of the True entries. On CPU via numpy: torch's nonzero took ~15 ms for 50k entries with
    2 OpenMP threads on a loaded 2-core machine (0.2 ms with one thread, 0.02 ms in numpy)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.flatten().nonzero().squeeze(1)


def _order(cand: Tensor, exact: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top k of (B, K) float64 `exact` by (float32-rounded similarity desc, training index asc)."""
    by_index = cand.argsort(dim=1)
    cand, exact = cand.gather(1, by_index), exact.gather(1, by_index)
    top = exact.float().sort(dim=1, descending=True, stable=True).indices[:, :k]
    return cand.gather(1, top), exact.gather(1, top)


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision == "auto":
        return default_precision(device)
    if (
        precision == "bf16"
        and device.type == "cuda"
        and torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    ):
        raise ValueError(
            "precision='bf16' on CUDA needs float32 accumulation: set "
            "torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False"
        )
    return precision


def _check_search(train_feats: Tensor, test_feats: Tensor, chunk_size: int) -> None:
    check_feature_pair(train_feats, test_feats, "kNN")
    if train_feats.device != test_feats.device:
        raise ValueError(f"train and test features are on {train_feats.device} and {test_feats.device}")
    if not train_feats.is_floating_point() or not test_feats.is_floating_point():
        raise ValueError(f"features must be floating point; got {train_feats.dtype}, {test_feats.dtype}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
