"""Exact k-nearest-neighbour search by cosine similarity, fast: a certified shortlist from a bf16 or
float32 GEMM, whose members are decided exactly with float64 dot products only where the GEMM's error
bound leaves them undecided. The similarity and tie rule it implements are those of `compmod.eval.knn`;
`Search` explains how the shortlist is certified and the members decided.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from compmod.eval.features import check_feature_pair
from compmod.eval.knn_bounds import Index, flat_true, one_thread, shortlist, threads
from compmod.eval.knn_members import decide, exact_rows, member_dots, order
from compmod.hardware import native_bf16

PRECISIONS = ("auto", "fp32", "bf16")
SHORTLIST_BF16 = (64, 512)  # shortlist lengths (at least k + 1) tried in turn on the bf16 similarities
SHORTLIST_FP32 = (8, 64)  # the float32 shortlists have k + 8, then k + 64 samples
PROBE_ROWS = 128  # "auto": queries of the first chunk searched in bf16 to measure how often it certifies
PROBE_CERTIFIED = 0.8  # ... and the share of them it must certify for "auto" to stay with bf16
BLOCK_ELEMENTS = 1 << 28  # at most 1 GiB of float32 similarities per chunk: ImageNet's 1.28M train
# features take 209 queries a chunk (not 1024: 5.2 GB), small banks keep chunk_size

__all__ = ["Members", "Neighbours", "Search", "check_search", "default_precision", "nearest_neighbours"]


class Neighbours(NamedTuple):
    """Result of `nearest_neighbours`: (M, k) int64 indices and float64 similarities, nearest first."""

    indices: Tensor
    similarities: Tensor
    precision: str  # the shortlist precision used (after the "auto" probe): "bf16" or "fp32"
    fp32_rows: int  # bf16 shortlist not certified: the query's row was recomputed in float32
    exact_rows: int  # float32 shortlist not certified either: the whole row was computed in float64


class Members(NamedTuple):
    """The k nearest samples of a chunk of queries as a set (in no particular order), with approximate
    similarities: |approx - s| <= delta for each member's exact similarity s."""

    queries: Tensor  # (B, d) float32 unit queries
    indices: Tensor  # (B, k) int64
    approx: Tensor  # (B, k) float64
    delta: Tensor  # (B,) float64


def default_precision(device: torch.device) -> str:
    """ "bf16" on CPUs with native bf16 dot products (AVX512-BF16 or AMX) and oneDNN, else "fp32".

    Measured on a 2-core AMD EPYC with AVX512-BF16 (benchmarks/results/knn.md): the bf16 GEMM runs 2-3x
    faster than float32 (MKL). Without native bf16 oneDNN emulates it, and on CUDA float32 is the default
    (cuBLAS may reduce bf16 products in reduced precision, which would void the bound). "auto" uses it only
    for small k and checks on the first queries that it certifies (`Search`).
    """
    return "bf16" if device.type == "cpu" and native_bf16(device) else "fp32"


def nearest_neighbours(
    train_feats: Tensor, test_feats: Tensor, k: int, precision: str = "auto", chunk_size: int = 1024
) -> Neighbours:
    """The exact k nearest `train_feats` of each of `test_feats` under the rule of `compmod.eval.knn`.

    Args:
        train_feats: (N, d) features (any float dtype; normalised in float32).
        test_feats: (M, d) features on the same device.
        k: neighbours per query, 1 <= k <= N.
        precision: "auto", "fp32" or "bf16": the GEMM of the shortlist only (see `Search`); the result is
            the same for every precision.
        chunk_size: queries per similarity block; memory is O(chunk_size * N).

    Returns:
        `Neighbours` with (M, k) indices and float64 similarities, nearest first, on the features' device.
    """
    check_search(train_feats, test_feats, chunk_size)
    search = Search(train_feats, [k], precision, chunk_size)
    parts = [search.ordered(members) for (members,) in search.chunks(test_feats)]
    return Neighbours(
        torch.cat([p[0] for p in parts]),
        torch.cat([p[1] for p in parts]),
        search.precision,
        search.fp32_rows,
        search.exact_rows,
    )


class Search:
    """The k nearest of `train_feats`, for each k of `ks`, for chunks of queries: `chunks(test)` yields
    their `Members`.

    Per chunk of queries a GEMM gives approximate similarities a with a proven per-query bound
    |a - s| <= delta (`knn_bounds`: float32, or bf16 with its input and output rounding); each query keeps
    its top-K' of a. Every sample with a < T = a_(k) - 2 delta - MARGIN has s < a_(k) - delta - MARGIN
    <= s_(k) - MARGIN, so it cannot be among the k nearest nor tie with them after rounding to float32. If
    the K'-th shortlisted a is below T the shortlist is certified (for the largest k, hence for all).
    bf16 shortlists are then recomputed in float32 (bound delta_32 ~ d 2^-24). `knn_members.decide` then
    settles the members from the float32 values, with float64 dot products only around the k-th. A query
    whose shortlist is not certified is retried: bf16 with K' = 64, then 512 -> its float32 GEMM row
    (K' = k + 8, then k + 64) -> its whole row in float64.

    precision "auto" is `default_precision`. Where that is "bf16" and k < 64, the first `PROBE_ROWS`
    queries are searched in bf16, and the rest too if at least `PROBE_CERTIFIED` of them certified
    without a float32 row; otherwise "auto" is float32 (learned features are dense around the 200th
    neighbour: measured, ~1/3 of the queries need more than 512 bf16 candidates for k = 200).
    The GEMM and topk of each block run on all threads, the small operations after them on one
    (`one_thread`).
    """

    def __init__(
        self, train_feats: Tensor, ks: Sequence[int], precision: str = "auto", chunk_size: int = 1024
    ) -> None:
        n = train_feats.shape[0]
        if not ks or any(not 1 <= k <= n for k in ks):
            raise ValueError(f"k must be in [1, {n}]; got {list(ks)}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        self.ks, self.k = tuple(ks), max(ks)
        self.chunk_size = max(1, min(chunk_size, BLOCK_ELEMENTS // n))  # memory O(min(chunk, 2^28 / N) N)
        self.precision = _resolve_precision(precision, train_feats.device)
        self.probing = precision == "auto" and self.precision == "bf16"
        if self.probing and self.k + 1 > SHORTLIST_BF16[0]:  # bf16 shortlists of large k rarely certify
            self.precision, self.probing = "fp32", False
        train = F.normalize(train_feats.to(torch.float32), dim=1)
        self.index = Index(train, with_bf16=self.precision == "bf16")
        self.fp32_rows = self.exact_rows = 0

    def chunks(self, test_feats: Tensor) -> Iterator[tuple[Members, ...]]:
        """`Members` for each k of `ks`, chunk after chunk of `chunk_size` queries (a probe splits the
        first chunk in two)."""
        check_feature_pair(self.index.train, test_feats, "kNN")
        test = F.normalize(test_feats.to(torch.float32), dim=1)
        for q in test.split(self.chunk_size):
            if self.probing:
                self.probing, head, q = False, q[:PROBE_ROWS], q[PROBE_ROWS:]
                before = self.fp32_rows
                yield self._search(head)
                if self.fp32_rows - before > (1 - PROBE_CERTIFIED) * head.shape[0]:
                    self.precision = "fp32"
                if not q.shape[0]:
                    continue
            yield self._search(q)

    def ordered(self, members: Members) -> tuple[Tensor, Tensor]:
        """The members nearest first by the rule, with their float64 similarities: (B, k), (B, k)."""
        with threads(self.index.threads, members.queries.device):
            sims = member_dots(self.index.train, members.queries, members.indices)
        return order(members.indices, sims, members.indices.shape[1])

    def _search(self, q: Tensor) -> tuple[Members, ...]:
        """(B, d) unit queries -> their `Members` for each k. One thread but for `Index` GEMMs and topks."""
        with one_thread(q.device):
            k, index, b, dev = self.k, self.index, q.shape[0], q.device
            delta = torch.zeros(b, dtype=torch.float64, device=dev)
            out = [
                Members(q, _zeros(b, j, torch.long, dev), _zeros(b, j, torch.float64, dev), delta)
                for j in self.ks
            ]
            rows = torch.arange(b, device=dev)
            if self.precision == "bf16":
                block, bound = index.gemm(q, bf16=True), index.bf16_delta(q, q.to(torch.bfloat16))
                lengths = [max(k + 1, n) for n in SHORTLIST_BF16]
                rows = self._levels(q, block, rows, bound, lengths, out, True)
                self.fp32_rows += rows.numel()
            if rows.numel():
                block, bound = index.gemm(q[rows], bf16=False), index.fp32_delta(q[rows], gemm=True)
                rows = self._levels(q, block, rows, bound, [k + n for n in SHORTLIST_FP32], out, False)
            if rows.numel():  # more than K' samples within ~1e-4 of the k-th (duplicates): rows in float64
                self.exact_rows += rows.numel()
                with threads(index.threads, dev):
                    idx, sims = exact_rows(index.train, q[rows], k)
                for m, j in zip(out, self.ks, strict=True):
                    m.indices[rows], m.approx[rows] = idx[:, :j], sims[:, :j]
            return tuple(out)

    def _levels(
        self,
        q: Tensor,
        block: Tensor,
        rows: Tensor,
        bound: Tensor,
        lengths: list[int],
        out: list[Members],
        bf16: bool,
    ) -> Tensor:
        """Shortlists of `lengths` in turn for the (R, N) `block` of queries `q[rows]` (error <= `bound`);
        the members of the certified rows go into `out`. Returns the rows left uncertified."""
        for length in lengths:
            cand, a, ok = shortlist(*self.index.topk(block, length), self.k, block.shape[1], bound, bf16)
            done, left = flat_true(ok), flat_true(~ok)
            if done.numel():
                if done.numel() < ok.numel():
                    cand, a = cand[done], a[done]
                self._decide(q, rows[done], cand, a, bound[done], out, bf16)
            if not left.numel():
                return left
            # (index_select of bf16 rows is ~100x slower on CPU than indexing)
            rows, block, bound = rows[left], block[left], bound[left]
        return rows

    def _decide(
        self, q: Tensor, rows: Tensor, cand: Tensor, a: Tensor, bound: Tensor, out: list[Members], bf16: bool
    ) -> None:
        """Members of each k for certified shortlists (cand, a) of queries `q[rows]`, into `out`."""
        qs = q[rows]
        if bf16:  # float32 dot products of the shortlisted samples above the threshold
            a, bound = self.index.dots(qs, cand, a > -torch.inf), self.index.fp32_delta(qs, gemm=False)
            a, by_value = a.sort(dim=1, descending=True)
            cand = cand.gather(1, by_value)
        out[0].delta[rows] = bound.double()  # one delta tensor, shared by the Members of every k
        for m, j in zip(out, self.ks, strict=True):
            m.indices[rows], m.approx[rows] = decide(self.index.train, qs, cand, a, bound, j)


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


def check_search(train_feats: Tensor, test_feats: Tensor, chunk_size: int) -> None:
    """Raise ValueError unless the features are float (N, d) / (M, d) on one device and chunk_size >= 1."""
    check_feature_pair(train_feats, test_feats, "kNN")
    if train_feats.device != test_feats.device:
        raise ValueError(f"train and test features are on {train_feats.device} and {test_feats.device}")
    if not train_feats.is_floating_point() or not test_feats.is_floating_point():
        raise ValueError(f"features must be floating point; got {train_feats.dtype}, {test_feats.dtype}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")


def _zeros(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.zeros(rows, cols, dtype=dtype, device=device)
