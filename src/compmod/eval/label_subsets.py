"""Class-balanced label subsets (SimCLR's 1 % / 10 % protocol), drawn once per (dataset, fraction, seed)
and saved as a small JSON index file, so every method and every later evaluation uses the same images."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from compmod.errors import DataError
from compmod.files import atomic_write

SUBSET_KEYS = ("fraction", "seed", "dataset", "num_images", "indices")


def balanced_subset(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Indices of a class-balanced fraction of a labelled split.

    Args:
        labels: (N,) integer labels; -1 (unlabelled) is never drawn.
        fraction: in (0, 1]; class c with n_c images gives max(1, round-half-up(fraction * n_c)) of them.
        seed: seeds a `torch.Generator`; the same labels and seed give the same indices.

    Returns:
        int64 (K,) indices into `labels`, sorted ascending.
    """
    if labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be a 1-D integer tensor; got {labels.dtype} {tuple(labels.shape)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1]; got {fraction}")
    labels = labels.cpu()
    classes = torch.unique(labels[labels >= 0])
    if classes.numel() == 0:
        raise ValueError("balanced_subset needs at least one labelled image (labels >= 0)")
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for c in classes.tolist():  # ascending class order: the draws do not depend on the data order of classes
        members = (labels == c).nonzero().squeeze(1)
        k = class_quota(members.numel(), fraction)
        picked.append(members[torch.randperm(members.numel(), generator=generator)[:k]])
    return torch.cat(picked).sort().values


def class_quota(n: int, fraction: float) -> int:
    """Images drawn from a class of n: round-half-up(fraction * n), at least 1."""
    return max(1, math.floor(fraction * n + 0.5))


def save_subset(path: str | Path, indices: Tensor, meta: dict[str, Any]) -> None:
    """Write `{"fraction", "seed", "dataset", "num_images", "indices"}` as JSON, atomically (temp + replace).

    `meta` holds the first four keys (other keys are kept too)."""
    missing = [k for k in SUBSET_KEYS[:-1] if k not in meta]
    if missing:
        raise ValueError(f"save_subset: meta lacks {', '.join(missing)}")
    text = json.dumps({**meta, "indices": [int(i) for i in indices.tolist()]}) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def load_subset(path: str | Path, **expected: Any) -> tuple[Tensor, dict[str, Any]]:
    """Read an index file written by `save_subset`: (int64 indices, the other fields).

    `expected` (any of fraction, seed, dataset, num_images) must match the file; a mismatch, a malformed
    file or an index outside [0, num_images) raises DataError naming the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"subset index file {str(path)!r} cannot be read: {e}") from None
    if not isinstance(data, dict) or any(k not in data for k in SUBSET_KEYS):
        raise DataError(f"subset index file {str(path)!r} is not an index file; expected keys {SUBSET_KEYS}")
    for key, want in expected.items():
        have = data[key]
        numeric = key == "fraction" and isinstance(have, float | int)
        if not (math.isclose(have, want) if numeric else have == want):
            raise DataError(
                f"subset index file {str(path)!r} was drawn for {key}={have!r}, but this dataset has "
                f"{key}={want!r}; delete the file to draw a new subset"
            )
    raw = data.pop("indices")
    n = data["num_images"]
    if not isinstance(raw, list) or not all(isinstance(i, int) and 0 <= i < n for i in raw):
        raise DataError(f"subset index file {str(path)!r}: indices must be integers in [0, {n})")
    indices = torch.tensor(raw, dtype=torch.long)
    if indices.unique().numel() != indices.numel():
        raise DataError(f"subset index file {str(path)!r}: indices repeat")
    return indices, data


def subset_indices(path: Path, labels: Tensor, fraction: float, seed: int, dataset: str) -> Tensor:
    """The subset saved at `path` if it matches these labels, else a new `balanced_subset` saved there."""
    meta = {"fraction": fraction, "seed": seed, "dataset": dataset, "num_images": int(labels.shape[0])}
    if not path.exists():
        idx = balanced_subset(labels, fraction, seed)
        save_subset(path, idx, meta)
        return idx
    idx, _ = load_subset(path, **meta)
    picked = labels[idx]
    want = [class_quota(n, fraction) if n > 0 else 0 for n in torch.bincount(labels[labels >= 0]).tolist()]
    if bool((picked < 0).any()) or torch.bincount(picked, minlength=len(want)).tolist() != want:
        raise DataError(
            f"subset index file {str(path)!r} is not a class-balanced {fraction:g} of this dataset's labels; "
            "delete the file to draw a new subset"
        )
    return idx


def percent_label(fraction: float) -> str:
    """0.01 -> "1", 0.1 -> "10", 0.005 -> "0p5" (for file names and result keys)."""
    return f"{fraction * 100:g}".replace(".", "p")
