"""The training side of the kNN search (`knn_search.Search`): unit vectors, their GEMM with a chunk of
queries, and proven bounds on that GEMM's error; the certified shortlist of one block of similarities.

Bounds, with u = 2^-24 and gamma = d u / (1 - d u) for float32 accumulation over d terms:

* float32 GEMM (and float32 dot products): delta_32 = gamma |q| max|x| (inner products, Higham 2002,
  Sec. 3.1; |q|, |x| ~ 1); on CUDA with TF32 allowed the GEMM gets 2 2^-10 more (its rows then mostly end
  in float64: keep `torch.backends.cuda.matmul.allow_tf32` off for speed);
* bf16 GEMM of q~ = bf16(q), x~ = bf16(x) with float32 accumulation (oneDNN on AVX512-BF16 / AMX: products
  of bf16 are exact in float32): q~.x~ - q.x = -q~.e_x - e_q.x with e = v - v~, so by Cauchy-Schwarz
  |q~.x~ - q.x| <= |q~| max|e_x| + |e_q| max|x| (the actual rounding errors, ~0.45 2^-8 each, not the
  worst case 2^-8); plus gamma |q~| max|x~| for the accumulation; plus the bf16 rounding of the output, at
  most half an ulp: 2^-9 when the largest a of the row is < 1 (all |v| < 1), else 2^-8 |v| <= 2^-7. Rows
  whose threshold is <= -0.99 are not certified (negative a with |a| >= 1 could round by more). A factor
  1.01 covers the float32 evaluation of the norms.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import torch
from torch import Tensor

MARGIN = 2.0**-22 + 1e-12  # float32 rounding of similarities <= ~1 (ulp 2^-23) plus the float64 error


class Index:
    """(N, d) unit float32 training vectors, their bf16 copy (`with_bf16`), the norms the bounds need,
    and reused similarity blocks and gather buffers (fresh large tensors cost page faults on CPU)."""

    def __init__(self, train: Tensor, with_bf16: bool) -> None:
        self.train, self.threads = train, torch.get_num_threads()
        n, d = train.shape
        self.gamma = d * 2.0**-24 / (1 - d * 2.0**-24)
        self.blocks: dict[torch.dtype, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        self.norm_max = torch.linalg.vector_norm(train, dim=1).max().item() * 1.01
        if with_bf16:
            self.train_bf16 = train.to(torch.bfloat16)
            err_max = norm_max = 0.0
            buf = train.new_empty(min(n, 8192), d)
            for x, xb in zip(train.split(8192), self.train_bf16.split(8192), strict=True):  # cache-sized
                back = buf[: x.shape[0]].copy_(xb)
                norm_max = max(norm_max, torch.linalg.vector_norm(back, dim=1).max().item())
                err_max = max(err_max, torch.linalg.vector_norm(back.sub_(x), dim=1).max().item())
            self.err_max, self.norm_bf16_max = 1.01 * err_max, 1.01 * norm_max

    def gemm(self, q: Tensor, bf16: bool) -> Tensor:
        """(B, N) similarities of unit queries `q` with every training vector, in bf16 or float32, written
        into a reused block (valid until the next call with the same dtype); on all threads."""
        with threads(self.threads, q.device):
            if bf16:
                block = self._block(q.shape[0], torch.bfloat16)
                return torch.mm(q.to(torch.bfloat16), self.train_bf16.T, out=block)
            return torch.mm(q, self.train.T, out=self._block(q.shape[0], torch.float32))

    def topk(self, block: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """Values and indices of the `length` largest of each row of `block`, on all threads."""
        with threads(self.threads, block.device):
            return block.topk(min(length, block.shape[1]), dim=1)

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

    def dots(self, q: Tensor, cand: Tensor, keep: Tensor) -> Tensor:
        """(R, K) float32 dot products of queries with their candidates where `keep`, -inf elsewhere."""
        flat = flat_true(keep)
        rows, queries = self._buffer("rows", flat.numel()), self._buffer("queries", flat.numel())
        out = torch.full(cand.shape, -torch.inf, device=q.device)
        with threads(self.threads, q.device):  # ~10^7 elements: worth the threads
            torch.index_select(self.train, 0, cand.flatten().index_select(0, flat), out=rows)
            torch.index_select(q, 0, flat.div(cand.shape[1], rounding_mode="floor"), out=queries)
            return out.view(-1).index_copy_(0, flat, rows.mul_(queries).sum(1)).view(cand.shape)

    def _buffer(self, name: str, rows: int) -> Tensor:
        """A reused (rows, d) float32 buffer."""
        buf = self.buffers.get(name)
        if buf is None or buf.shape[0] < rows:
            buf = self.buffers[name] = self.train.new_empty(max(rows, 4096), self.train.shape[1])
        return buf[:rows]

    def _block(self, rows: int, dtype: torch.dtype) -> Tensor:
        n = self.train.shape[0]
        buf = self.blocks.get(dtype)
        if buf is None or buf.numel() < rows * n:
            buf = self.blocks[dtype] = torch.empty(rows * n, dtype=dtype, device=self.train.device)
        return buf[: rows * n].view(rows, n)


def shortlist(
    vals: Tensor, cand: Tensor, k: int, n: int, delta: Tensor, bf16: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """The top-K' `vals`, `cand` (`topk` of a row of n similarities with error bound `delta` (R,)) ->
    indices, float32 values (-inf below the threshold T = a_(k) - 2 delta - MARGIN), and whether the row is
    certified (its K'-th value < T, so every sample that can be among the k nearest is in the shortlist)."""
    vals = vals.float()
    if bf16:  # half an ulp of the bf16 output: 2^-9 below 1 in magnitude, else at most 2^-7
        delta = delta + torch.where(vals[:, 0] < 1, 2.0**-9, 2.0**-7)
    thresh = vals[:, k - 1] - 2 * delta - MARGIN
    ok = vals[:, -1] < thresh
    if bf16:
        ok &= thresh > -0.99
    if vals.shape[1] == n:
        ok[:] = True
    return cand, vals.masked_fill_(vals < thresh[:, None], -torch.inf), ok


@contextmanager
def threads(n: int, device: torch.device) -> Iterator[None]:
    """Run the block with `n` torch threads on CPU, then restore the thread count (no-op elsewhere)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread(device: torch.device) -> AbstractContextManager[None]:
    """Run the search's small CPU ops (~10^5 elements each: certification, members, votes) in one thread;
    `Index` runs its GEMMs, topks and gathers (10^7 elements and more) on the threads there were when it
    was built.

    On 2 cores shared with other processes each OpenMP fork/join of a small op cost ~5-10 ms (a team member
    waiting for a core), ~10x its single-threaded time; on an idle machine it saves ~0.1 ms.
    """
    return threads(1, device)


def flat_true(mask: Tensor) -> Tensor:
    """Flat indices of the True entries. On CPU via numpy: torch's nonzero took ~15 ms for 50k entries with
    2 OpenMP threads on a loaded 2-core machine (0.2 ms with one thread, 0.02 ms in numpy)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.flatten().nonzero().squeeze(1)
