"""The raw-pixel kNN floor of a dataset (`pixel_knn_top1`), computed once per dataset and k.

The floor depends on the images, the labels, k and the kNN rule of `compmod.eval.knn`, never on the encoder,
yet it costs as much as the encoder's own kNN (Fashion-MNIST: 60k x 10k similarities of 784 pixels, 4.2 s
of the demo's evaluation on 2 CPU cores). So the value is kept in the cache folder
(``<cache_dir()>/pixel_knn/``, i.e. ``$COMPMOD_CACHE_DIR`` or ``~/.cache/compmod/decoded``) under a SHA-256
of everything it depends on: `RULE_VERSION`, k, and the bytes and shapes of the four tensors (hashing
Fashion-MNIST's 55 MB takes ~0.03 s). Any change to the data gives another key; a missing, unreadable or
corrupt entry is recomputed, and a cache folder that cannot be written only costs the recomputation.

A large dataset is measured on a bounded sample (`pixel_sample`): at most `max_images` train images,
evenly spaced, each resized (antialiased) to at most `size` px. ImageNet's 1.28M train images at 224 px
would be ~771 GB of float32 pixels; 100k at 32 px are 1.2 GB. `evaluate` writes the sample's size into
the results (`pixel_knn_train_images`, `pixel_knn_size`) whenever it is not the whole split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import Tensor

from compmod.data.datasets.convert import resize_images
from compmod.data.datasets.decode_cache import cache_dir
from compmod.eval.features import pixel_features
from compmod.eval.knn import knn_accuracy
from compmod.files import atomic_write

SAMPLE_CHUNK = 1024  # images gathered and resized at a time by `pixel_sample`
RULE_VERSION = 1  # bump when the neighbour, tie or vote rule of compmod.eval.knn changes its results

_log = logging.getLogger(__name__)


def pixel_knn_floor(
    train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor, k: int
) -> float:
    """5-NN (or k-NN) top-1 in percent of raw pixels: `knn_accuracy` of `pixel_features`, from the cache
    when this exact data and k were measured before."""
    key = floor_key(train_images, train_labels, test_images, test_labels, k)
    path = cache_dir() / "pixel_knn" / f"{key}.json"
    cached = _read(path)
    if cached is not None:
        return cached
    value = knn_accuracy(
        pixel_features(train_images), train_labels, pixel_features(test_images), test_labels, k=k
    )
    text = json.dumps({"pixel_knn_top1": value, "k": k, "rule": RULE_VERSION}).encode()
    try:
        atomic_write(path, lambda f: f.write(text))
    except OSError as err:  # a read-only or full cache folder: the value is still right
        _log.warning("pixel kNN floor not cached at %s: %s", path, err)
    return value


def pixel_sample(
    images: Tensor, labels: Tensor, max_images: int | None, size: int | None
) -> tuple[Tensor, Tensor, dict[str, int]]:
    """(images, labels, what was reduced): at most `max_images` evenly spaced images (all when None), at
    most `size` px on a side (antialiased resize of larger ones; None: as they are). Gathered and resized
    `SAMPLE_CHUNK` images at a time, so a memory-mapped split is never read whole into memory."""
    notes: dict[str, int] = {}
    n, c, h, w = images.shape
    idx = torch.arange(n)
    if max_images is not None and n > max_images:
        idx, notes["train_images"] = torch.linspace(0, n - 1, max_images).round().long(), max_images
    if size is not None and max(h, w) > size:
        notes["size"] = size
    if not notes:
        return images, labels, notes
    side = size if "size" in notes else None
    out = torch.empty((len(idx), c, side or h, side or w), dtype=images.dtype)
    for i in range(0, len(idx), SAMPLE_CHUNK):
        out[i : i + SAMPLE_CHUNK] = resize_images(images[idx[i : i + SAMPLE_CHUNK]], side)
    return out, labels[idx], notes


def floor_key(
    train_images: Tensor, train_labels: Tensor, test_images: Tensor, test_labels: Tensor, k: int
) -> str:
    """32 hex digits of the SHA-256 of the rule version, k, and each tensor's dtype, shape and bytes."""
    digest = hashlib.sha256(f"rule={RULE_VERSION};k={k}".encode())
    for t in (train_images, train_labels, test_images, test_labels):
        t = t.contiguous()
        digest.update(f";{t.dtype}{tuple(t.shape)}".encode())
        digest.update(memoryview(t.view(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()[:32]


def _read(path: Path) -> float | None:
    try:
        value = json.loads(path.read_text())["pixel_knn_top1"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
