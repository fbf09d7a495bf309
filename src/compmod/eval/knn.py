"""k-nearest-neighbour classification on frozen features, by cosine similarity.

Two protocols:

* unweighted (``weighted=False``): majority vote among the k nearest training samples, the 5-NN of the
  CompMod paper;
* weighted (``weighted=True``): each neighbour votes with ``exp(sim / temperature)``, the k=200,
  temperature 0.07 monitor of InstDisc (Wu et al., CVPR 2018, Sec. 3.4) as used by solo-learn.

Similarity: both feature sets are L2-normalised in float32 (`F.normalize`); the similarity of a pair is
the dot product of those float32 unit vectors evaluated in float64 (products exact, error < 1e-13). The
k nearest neighbours are the k largest similarities rounded to float32; equal float32 similarities are
ranked by the smaller training index. The weighted vote uses these float64 similarities. This rule, not
the rounding of one GEMM, defines the result, so every `precision` returns the same predictions (see
`knn_search.Search` for how the neighbours are found exactly, `knn_predict` for how the vote is certified).

Tie rule (both protocols): the class with the largest vote wins; when several classes have exactly the
same vote, the one whose nearest member among the k neighbours ranks first wins.

Several votes on the same features (the evaluation's 5-NN and weighted 200-NN) share one search:
`knn_predict_votes`, `knn_accuracies`.

If k exceeds the number of training samples it is clamped to that number with a `UserWarning` (all
training samples then vote), so that a kNN monitor configured for a full dataset still runs on a tiny one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from compmod.eval.features import pixel_features
from compmod.eval.knn_bounds import flat_true, one_thread
from compmod.eval.knn_search import (
    Members,
    Neighbours,
    Search,
    check_search,
    default_precision,
    nearest_neighbours,
)

__all__ = [
    "Neighbours",
    "default_precision",
    "knn_accuracies",
    "knn_accuracy",
    "knn_predict",
    "knn_predict_votes",
    "nearest_neighbours",
    "pixel_features",
]


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    k: int,
    num_classes: int,
    weighted: bool = False,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    precision: str = "auto",
) -> Tensor:
    """Predict labels of `test_feats` from their k nearest `train_feats` by cosine similarity.

    The k nearest are found exactly as a set (`Search`); the vote is then taken on approximate
    similarities with a proven error bound delta and kept where it is certain: unweighted, where one class
    has the most votes; weighted, where the best class's vote beats every other's by more than the factor
    exp(2 delta / T) the bound allows. Only the other queries (vote ties, close weighted votes) get the
    float64 similarities of their k neighbours, their order by the rule, and the exact vote.

    Args:
        train_feats: (N, d) features of the labelled set (any float dtype; computed in float32).
        train_labels: (N,) integer labels in [0, num_classes).
        test_feats: (M, d) features to classify, on the same device as `train_feats`.
        k: neighbours per test sample (>= 1; clamped to N with a warning).
        num_classes: number of classes C.
        weighted: vote with exp(sim / temperature) instead of one vote per neighbour.
        temperature: softmax temperature of the weighted vote (> 0); unused when unweighted.
        chunk_size: test rows per similarity block; memory is O(chunk_size * N), never O(M * N).
        precision: GEMM of the neighbour shortlist, "auto", "fp32" or "bf16" (see `Search`); the
            predictions do not depend on it.

    Returns:
        (M,) int64 predicted labels on the features' device.
    """
    votes = [(k, weighted)]
    return knn_predict_votes(
        train_feats, train_labels, test_feats, votes, num_classes, temperature, chunk_size, precision
    )[0]


def knn_predict_votes(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    votes: Sequence[tuple[int, bool]],
    num_classes: int,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    precision: str = "auto",
) -> list[Tensor]:
    """`knn_predict` for several (k, weighted) votes from one search (one GEMM per chunk of queries,
    shortlisted for the largest k): e.g. the evaluation's [(5, False), (200, True)]. One (M,) tensor of
    predictions per vote, each equal to `knn_predict` with that k and weighting."""
    if not votes:
        raise ValueError("votes must name at least one (k, weighted) pair")
    ks = [
        _check_inputs(train_feats, train_labels, test_feats, k, num_classes, temperature, chunk_size)
        for k, _ in votes
    ]
    labels = train_labels.to(device=train_feats.device, dtype=torch.long)
    search = Search(train_feats, ks, precision, chunk_size)
    preds: list[list[Tensor]] = [[] for _ in votes]
    for members in search.chunks(test_feats):
        with one_thread(labels.device):
            for out, m, (_, weighted) in zip(preds, members, votes, strict=True):
                out.append(_certified_vote(search, m, labels, num_classes, weighted, temperature))
    return [torch.cat(p) for p in preds]


def _certified_vote(
    search: Search, members: Members, labels: Tensor, num_classes: int, weighted: bool, temperature: float
) -> Tensor:
    """The vote of `_vote` from approximate similarities where it is certain, exact elsewhere."""
    approx, delta = members.approx, members.delta
    neighbour_labels = labels[members.indices]
    scores = torch.zeros(approx.shape[0], num_classes, dtype=torch.float64, device=approx.device)
    if weighted:  # relative to the row's largest approximate similarity: cannot overflow
        scores.scatter_add_(
            1, neighbour_labels, ((approx - approx.max(dim=1, keepdim=True).values) / temperature).exp()
        )
    else:
        scores.scatter_add_(1, neighbour_labels, torch.ones_like(approx))
    if num_classes == 1:
        return scores.argmax(dim=1)
    best, second = scores.topk(2, dim=1).values.unbind(1)
    # Each weight is off by a factor within exp(+-delta / T), so each class total too; 1e-9 covers the
    # float64 rounding of both the sums here and the exact vote's.
    factor = (2 * delta / temperature).exp() * (1 + 1e-9) if weighted else torch.ones_like(delta)
    uncertain = flat_true(~(best > second * factor))
    preds = scores.argmax(dim=1)
    if uncertain.numel():
        part = Members(*(t[uncertain] for t in members))
        preds[uncertain] = _vote(*search.ordered(part), labels, num_classes, weighted, temperature)
    return preds


def _vote(
    indices: Tensor, sims: Tensor, labels: Tensor, num_classes: int, weighted: bool, temperature: float
) -> Tensor:
    """Majority or exp(sim / T) vote over the (B, k) neighbours, nearest first, with their float64
    similarities; exact ties go to the nearest-ranked class."""
    k = indices.shape[1]
    neighbour_labels = labels[indices]  # (M, k)
    # Weighted: subtracting the row maximum leaves the vote ratios unchanged and cannot overflow.
    votes = ((sims - sims[:, :1]) / temperature).exp() if weighted else torch.ones_like(sims)
    scores = torch.zeros(sims.shape[0], num_classes, dtype=sims.dtype, device=sims.device)
    scores.scatter_add_(1, neighbour_labels, votes)
    ranks = torch.arange(k, device=sims.device).expand_as(neighbour_labels)
    first_rank = torch.full(scores.shape, k, device=sims.device, dtype=torch.long)
    first_rank.scatter_reduce_(1, neighbour_labels, ranks, reduce="amin")
    tied = scores == scores.max(dim=1, keepdim=True).values
    return torch.where(tied, first_rank, k + 1).argmin(dim=1)


def knn_accuracy(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    k: int = 5,
    weighted: bool = False,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    precision: str = "auto",
) -> float:
    """Top-1 kNN accuracy in percent (0..100); see `knn_predict` for the arguments.

    The number of classes is taken as 1 + the largest label in `train_labels` and `test_labels`.
    """
    votes = [(k, weighted)]
    return knn_accuracies(
        train_feats, train_labels, test_feats, test_labels, votes, temperature, chunk_size, precision
    )[0]


def knn_accuracies(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    votes: Sequence[tuple[int, bool]],
    temperature: float = 0.07,
    chunk_size: int = 1024,
    precision: str = "auto",
) -> list[float]:
    """`knn_accuracy` of each (k, weighted) vote, from one search (`knn_predict_votes`)."""
    if test_labels.ndim != 1 or test_labels.shape[0] != test_feats.shape[0]:
        raise ValueError(
            f"test_labels must have shape ({test_feats.shape[0]},) to match test_feats; "
            f"got {tuple(test_labels.shape)}"
        )
    if train_labels.numel() == 0 or test_labels.numel() == 0:
        raise ValueError("knn_accuracy needs non-empty train and test sets")
    num_classes = int(max(train_labels.max().item(), test_labels.max().item())) + 1
    preds = knn_predict_votes(
        train_feats, train_labels, test_feats, votes, num_classes, temperature, chunk_size, precision
    )
    return [(p == test_labels.to(p.device)).double().mean().item() * 100.0 for p in preds]


def _check_inputs(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    k: int,
    num_classes: int,
    temperature: float,
    chunk_size: int,
) -> int:
    """Raise ValueError on malformed inputs; return k clamped to the number of training samples."""
    check_search(train_feats, test_feats, chunk_size)
    n = train_feats.shape[0]
    if train_labels.ndim != 1 or train_labels.shape[0] != n:
        raise ValueError(f"train_labels must have shape ({n},); got {tuple(train_labels.shape)}")
    if train_labels.is_floating_point() or train_labels.is_complex():
        raise ValueError(f"labels must be integers; got {train_labels.dtype}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    lo, hi = int(train_labels.min().item()), int(train_labels.max().item())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"train_labels must lie in [0, {num_classes}); found range [{lo}, {hi}]")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if k > n:
        warnings.warn(f"k={k} exceeds the {n} training samples; using k={n}", stacklevel=3)
        k = n
    return k
