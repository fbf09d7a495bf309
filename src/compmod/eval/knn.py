"""k-nearest-neighbour classification on frozen features, by cosine similarity.

Two protocols:

* unweighted (``weighted=False``): majority vote among the k nearest training samples, the 5-NN of the
  CompMod paper;
* weighted (``weighted=True``): each neighbour votes with ``exp(sim / temperature)``, the k=200,
  temperature 0.07 monitor of InstDisc (Wu et al., CVPR 2018, Sec. 3.4) as used by solo-learn.

Similarity: both feature sets are L2-normalised in float32 (`F.normalize`); the similarity of a pair is
the dot product of those float32 unit vectors evaluated in float64 (products exact, error < 1e-13). The
k nearest neighbours are the k largest similarities rounded to float32; equal float32 similarities are
ranked by the smaller training index. This rule, not the rounding of one GEMM, defines the result, so every
`precision` returns the same neighbours (see `nearest_neighbours` for how they are found exactly).

Tie rule (both protocols): the class with the largest vote wins; when several classes have exactly the
same vote, the one whose nearest member among the k neighbours ranks first wins.

If k exceeds the number of training samples it is clamped to that number with a `UserWarning` (all
training samples then vote), so that a kNN monitor configured for a full dataset still runs on a tiny one.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from compmod.eval.features import pixel_features
from compmod.eval.knn_search import Neighbours, _check_search, default_precision, nearest_neighbours

__all__ = [
    "Neighbours",
    "default_precision",
    "knn_accuracy",
    "knn_predict",
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

    Args:
        train_feats: (N, d) features of the labelled set (any float dtype; computed in float32).
        train_labels: (N,) integer labels in [0, num_classes).
        test_feats: (M, d) features to classify, on the same device as `train_feats`.
        k: neighbours per test sample (>= 1; clamped to N with a warning).
        num_classes: number of classes C.
        weighted: vote with exp(sim / temperature) instead of one vote per neighbour.
        temperature: softmax temperature of the weighted vote (> 0); unused when unweighted.
        chunk_size: test rows per similarity block; memory is O(chunk_size * N), never O(M * N).
        precision: GEMM of the neighbour shortlist, "auto", "fp32" or "bf16" (see `nearest_neighbours`);
            the predictions do not depend on it.

    Returns:
        (M,) int64 predicted labels on the features' device.
    """
    k = _check_inputs(train_feats, train_labels, test_feats, k, num_classes, temperature, chunk_size)
    found = nearest_neighbours(train_feats, test_feats, k, precision, chunk_size)
    return _vote(
        found,
        train_labels.to(device=train_feats.device, dtype=torch.long),
        num_classes,
        weighted,
        temperature,
    )


def _vote(found: Neighbours, labels: Tensor, num_classes: int, weighted: bool, temperature: float) -> Tensor:
    """Majority or exp(sim / T) vote over the neighbours; exact ties go to the nearest-ranked class."""
    sims, k = found.similarities, found.indices.shape[1]
    neighbour_labels = labels[found.indices]  # (M, k)
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
    if test_labels.ndim != 1 or test_labels.shape[0] != test_feats.shape[0]:
        raise ValueError(
            f"test_labels must have shape ({test_feats.shape[0]},) to match test_feats; "
            f"got {tuple(test_labels.shape)}"
        )
    if train_labels.numel() == 0 or test_labels.numel() == 0:
        raise ValueError("knn_accuracy needs non-empty train and test sets")
    num_classes = int(max(train_labels.max().item(), test_labels.max().item())) + 1
    preds = knn_predict(
        train_feats, train_labels, test_feats, k, num_classes, weighted, temperature, chunk_size, precision
    )
    return (preds == test_labels.to(preds.device)).double().mean().item() * 100.0


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
    _check_search(train_feats, test_feats, chunk_size)
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
