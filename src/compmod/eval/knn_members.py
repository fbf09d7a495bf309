"""The k nearest samples decided exactly by the rule of `compmod.eval.knn` (float64 dot products of the
float32 unit vectors, ranked by their float32 rounding, then by training index), computing float64 only
where a GEMM's bounded error leaves the rule undecided; and the float64 similarities of given neighbours.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compmod.eval.knn_bounds import MARGIN, flat_true

PAIRS = 8192  # (query, sample) pairs per float64 gather: 32 MiB of float64 rows at d = 512


def decide(train: Tensor, q: Tensor, cand: Tensor, a: Tensor, delta: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(R, K') candidates with float32 values a, descending (-inf: excluded), |a - s| <= delta -> the k
    members by the rule and their float64 values (exact where computed, else a).

    Positions [0, first) hold a > a_(k) + 2 delta + MARGIN: members whatever their exact value (fewer than
    k samples can rank above them); positions from `stop` on hold a < a_(k) - 2 delta - MARGIN: not
    members (k samples rank above them). Only the window [first, stop) around the k-th gets float64 dot
    products, and fills the places first..k-1 in rule order.
    """
    width = (2 * delta + MARGIN)[:, None]
    kth = a[:, k - 1 : k]
    first, stop = (a > kth + width).sum(1), (a >= kth - width).sum(1)
    span = torch.arange(int((stop - first).max()), device=a.device)
    pos = first[:, None] + span  # (R, W): the window, padded to the widest
    inside = flat_true(pos < stop[:, None])
    win = cand.gather(1, pos.clamp(max=a.shape[1] - 1))
    exact = _pair_dots(train, q, win.flatten()[inside], inside.div(span.numel(), rounding_mode="floor"))
    values = torch.zeros(pos.shape, dtype=torch.float64, device=a.device)
    values.view(-1)[inside] = exact
    key = torch.full(pos.shape, -torch.inf, dtype=torch.float64, device=a.device)
    key.view(-1)[inside] = exact.float().double()  # the rule ranks by the float32-rounded similarity
    top = _rank(win, key, span.numel())
    idx, out = cand[:, :k].clone(), a[:, :k].double()
    put = flat_true(pos < k)  # window place j goes to position first + j, up to k - 1
    r = put.div(span.numel(), rounding_mode="floor")
    idx[r, pos.view(-1)[put]] = win.gather(1, top).view(-1)[put]
    out[r, pos.view(-1)[put]] = values.gather(1, top).view(-1)[put]
    return idx, out


def _rank(cand: Tensor, key: Tensor, k: int) -> Tensor:
    """Positions of the top k of (R, K') `key` by (key desc, training index asc)."""
    by_index = cand.argsort(dim=1)
    top = key.gather(1, by_index).sort(dim=1, descending=True, stable=True).indices[:, :k]
    return by_index.gather(1, top)


def order(cand: Tensor, exact: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top k of (B, K) float64 `exact` by (float32-rounded similarity desc, training index asc)."""
    top = _rank(cand, exact.float(), k)
    return cand.gather(1, top), exact.gather(1, top)


def _pair_dots(train: Tensor, q: Tensor, samples: Tensor, queries: Tensor) -> Tensor:
    """(P,) float64 dot products of train[samples] and q[queries], gathered `PAIRS` at a time."""
    out = torch.empty(samples.shape[0], dtype=torch.float64, device=q.device)
    for s in range(0, samples.shape[0], PAIRS):
        x = train.index_select(0, samples[s : s + PAIRS]).double()
        out[s : s + PAIRS] = x.mul_(q.index_select(0, queries[s : s + PAIRS])).sum(1)
    return out


def member_dots(train: Tensor, q: Tensor, idx: Tensor) -> Tensor:
    """(B, k) float64 dot products of each query with its k samples, `PAIRS` pairs at a time (bmm)."""
    out = torch.empty(idx.shape, dtype=torch.float64, device=q.device)
    rows = max(1, PAIRS // idx.shape[1])
    for s in range(0, idx.shape[0], rows):
        x = train.index_select(0, idx[s : s + rows].flatten()).double().view(-1, idx.shape[1], q.shape[1])
        out[s : s + rows] = torch.bmm(x, q[s : s + rows].double()[:, :, None]).squeeze(2)
    return out


def exact_rows(train: Tensor, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k nearest by the rule from whole rows of float64 similarities, 8192 samples at a time."""
    exact = torch.cat([q.double() @ x.double().T for x in train.split(8192)], dim=1)
    every = torch.arange(train.shape[0], device=q.device).expand(q.shape[0], -1)
    return order(every, exact, k)
