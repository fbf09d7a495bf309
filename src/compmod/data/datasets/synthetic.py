"""Generated datasets in the real on-disk formats, for smoke runs of presets without the real data (and for
tests): the same loader and the same code path as the real files, images with a learnable label."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = (
    b"airplane",
    b"automobile",
    b"bird",
    b"cat",
    b"deer",
    b"dog",
    b"frog",
    b"horse",
    b"ship",
    b"truck",
)


def write_cifar10(root: Path, per_batch: int = 40, test: int = 60, seed: int = 0) -> Path:
    """Write `<root>/cifar-10-batches-py` in the real python-pickle format (5 training batches of
    `per_batch` images, a test batch of `test`); returns `root`.

    Class c has a bright 8 x 7 square at a class-specific position on channel c % 3 over dark noise, so a
    learned encoder can separate the classes."""
    rng = np.random.default_rng(seed)
    out = Path(root) / "cifar-10-batches-py"
    out.mkdir(parents=True)

    def batch(n: int) -> dict:
        labels = rng.integers(0, 10, n)
        imgs = rng.integers(0, 60, (n, 3, 32, 32), dtype=np.uint8)
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 4)
            imgs[i, c % 3, 4 + 8 * r : 12 + 8 * r, 2 + 7 * q : 9 + 7 * q] = 250
        return {b"data": imgs.reshape(n, 3072), b"labels": labels.tolist()}

    for i in range(1, 6):
        with open(out / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch), f, protocol=2)
    with open(out / "test_batch", "wb") as f:
        pickle.dump(batch(test), f, protocol=2)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": list(CIFAR10_NAMES)}, f, protocol=2)
    return Path(root)
