"""The raw-pixel kNN floor of a dataset (`pixel_knn_top1`), computed once per dataset and k.

The floor depends on the images, the labels, k and the kNN rule of `compmod.eval.knn`, never on the encoder,
yet it costs as much as the encoder's own kNN (Fashion-MNIST: 60k x 10k similarities of 784 pixels, 4.2 s
of the demo's evaluation on 2 CPU cores). So the value is kept in the cache folder
(``<cache_dir()>/pixel_knn/``, i.e. ``$COMPMOD_CACHE_DIR`` or ``~/.cache/compmod/decoded``) under a SHA-256
of everything it depends on: `RULE_VERSION`, k, and the bytes and shapes of the four tensors (hashing
Fashion-MNIST's 55 MB takes ~0.03 s). Any change to the data gives another key; a missing, unreadable or
corrupt entry is recomputed, and a cache folder that cannot be written only costs the recomputation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import Tensor

from compmod.data.datasets.decode_cache import cache_dir
from compmod.eval.features import pixel_features
from compmod.eval.knn import knn_accuracy
from compmod.files import atomic_write

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
