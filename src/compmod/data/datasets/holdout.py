"""A seeded, class-stratified held-out part of a labelled split: the test split of image folders that have
none (`data.holdout_fraction`) and the validation split carved out of a training set
(`data.validation_fraction`)."""

from __future__ import annotations

import numpy as np


def holdout_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean (N,) mask of held-out images: round(fraction * n_c) per class (at least 1 when the class
    has 2 or more images, never all of it), drawn by a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return mask
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(max(round(fraction * len(idx)), 1), len(idx) - 1)
        mask[idx[rng.permutation(len(idx))[:k]]] = True
    return mask
