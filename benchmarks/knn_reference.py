"""The two references of the kNN benchmark: the plain float32 GEMM + topk that compmod must not be slower
than, and the documented rule computed independently in float64, which compmod's predictions must equal.

* `plain_predict`: per chunk of 1024 queries `torch.mm` of the L2-normalised float32 features, `.topk(k)`,
  and the vote solo-learn's kNN monitor takes: one vote per neighbour or exp(sim / T) in float32, summed
  per class, `argmax` (a tie goes to the smallest class index). Several votes share one GEMM and one topk
  (of the largest k) when `shared`.
* `exact_predict`: the rule of `compmod.eval.knn` from scratch: float64 dot products of the float32 unit
  vectors, the k nearest by (float32-rounded similarity desc, training index asc), votes 1 or
  exp((s - s_max) / T) in float64 summed in rank order, exact ties to the class ranked first.
* `explain`: why plain's predictions differ from the rule's (vote ties, neighbour sets, near-tied votes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

CHUNK = 1024
Vote = tuple[int, bool]  # (k, weighted)


def plain_predict(
    train: Tensor,
    labels: Tensor,
    test: Tensor,
    votes: Sequence[Vote],
    num_classes: int,
    temperature: float = 0.07,
    shared: bool = False,
) -> list[Tensor]:
    """Predictions of the plain float32 GEMM + topk kNN for each vote; one pass per vote unless `shared`."""
    x, queries = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    passes = [list(votes)] if shared else [[v] for v in votes]
    out: dict[Vote, list[Tensor]] = {v: [] for v in votes}
    for group in passes:
        k_max = max(k for k, _ in group)
        for q in queries.split(CHUNK):
            vals, idx = torch.mm(q, x.T).topk(k_max, dim=1)
            for k, weighted in group:
                w = (vals[:, :k] / temperature).exp() if weighted else torch.ones_like(vals[:, :k])
                scores = torch.zeros(q.shape[0], num_classes, device=q.device)
                out[(k, weighted)].append(scores.scatter_add_(1, labels[idx[:, :k]], w).argmax(dim=1))
    return [torch.cat(out[v]) for v in votes]


def exact_neighbours(train: Tensor, test: Tensor, k_max: int) -> tuple[Tensor, Tensor]:
    """(M, k_max) indices by the rule and their float64 similarities, 256 queries at a time."""
    x = F.normalize(train.float(), dim=1).double()
    idx, sims = [], []
    for q in F.normalize(test.float(), dim=1).double().split(256):
        s = q @ x.T
        r = s.float()
        top = r.topk(k_max + 64, dim=1)
        # Rows with more than 64 samples tied with the k-th value after rounding: the whole row is sorted.
        short = (top.values[:, -1] >= top.values[:, k_max - 1]).nonzero().squeeze(1)
        cand = top.indices.sort(dim=1).values  # training index asc, then a stable sort by value desc
        order = cand.gather(1, r.gather(1, cand).sort(dim=1, descending=True, stable=True).indices)
        for i in short.tolist():
            order[i] = r[i].sort(descending=True, stable=True).indices[: k_max + 64]
        order = order[:, :k_max]
        idx.append(order)
        sims.append(s.gather(1, order))
    return torch.cat(idx), torch.cat(sims)


def exact_predict(
    neighbours: tuple[Tensor, Tensor],
    labels: Tensor,
    votes: Sequence[Vote],
    num_classes: int,
    temperature: float,
) -> list[Tensor]:
    """The rule's predictions for each vote from `exact_neighbours` (computed for the largest k)."""
    idx, sims = neighbours
    preds = []
    for k, weighted in votes:
        lab, s = labels[idx[:, :k]], sims[:, :k]
        w = ((s - s[:, :1]) / temperature).exp() if weighted else torch.ones_like(s)
        scores = torch.zeros(len(lab), num_classes, dtype=torch.float64).scatter_add_(1, lab, w)
        best = scores == scores.max(dim=1, keepdim=True).values
        first = best.gather(1, lab).double().argmax(dim=1)  # the first-ranked neighbour of a best class
        preds.append(lab.gather(1, first[:, None]).squeeze(1))
    return preds


def explain(
    plain: Tensor,
    exact: Tensor,
    neighbours: tuple[Tensor, Tensor],
    train: Tensor,
    test: Tensor,
    labels: Tensor,
    vote: Vote,
    num_classes: int,
    temperature: float,
) -> dict[str, Any]:
    """Where plain's predictions differ from the rule's, and why: a vote tie on the rule's neighbours
    (plain gives it to the smallest class), a different neighbour set (float32 GEMM rounding at the k-th),
    or weighted votes within 1e-4 relative of each other (float32 vs float64 weights)."""
    k, weighted = vote
    idx, sims = neighbours
    differ = (plain != exact).nonzero().squeeze(1)
    lab = labels[idx[:, :k]]
    w = ((sims[:, :k] - sims[:, :1]) / temperature).exp() if weighted else torch.ones_like(sims[:, :k])
    scores = torch.zeros(len(lab), num_classes, dtype=torch.float64).scatter_add_(1, lab, w)
    top2 = scores.topk(2, dim=1).values
    tied = top2[:, 0] == top2[:, 1]
    near = ~tied & (top2[:, 0] - top2[:, 1] <= 1e-4 * top2[:, 0])
    x, q = F.normalize(train.float(), dim=1), F.normalize(test.float(), dim=1)
    plain_sets = torch.cat([torch.mm(c, x.T).topk(k, dim=1).indices for c in q[differ].split(CHUNK)])
    other_set = (plain_sets.sort(dim=1).values != idx[differ, :k].sort(dim=1).values).any(dim=1)
    return {
        "differ": int(differ.numel()),
        "vote_tie": int(tied[differ].sum()),
        "near_tied_weighted_vote": int(near[differ].sum()),
        "different_neighbour_set": int(other_set.sum()),
        "unexplained": int((~tied[differ] & ~near[differ] & ~other_set).sum()),
        "vote_ties_in_total": int(tied.sum()),
    }
