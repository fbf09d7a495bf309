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


def write_imagenet(
    root: Path,
    classes: int = 4,
    train: int = 12,
    val: int = 3,
    sizes: tuple[int, int] = (48, 160),
    corrupt: int = 1,
    seed: int = 0,
) -> Path:
    """Write an ImageNet-style folder, `<root>/train/<wnid>/*.JPEG` and `<root>/val/<wnid>/*.JPEG`, of
    `classes` classes with `train` and `val` images each; returns `root`.

    Each image has its own width and height, drawn from `sizes` (so aspect ratios from ~1:3 to ~3:1), a
    smooth random texture, and a class-coloured disc at the centre, so a learned encoder can separate the
    classes. The last `corrupt` train files are truncated to half their bytes (unreadable, as ImageNet's
    few bad files are)."""
    from PIL import Image  # the folder loader's decoder; imported here because CIFAR needs none

    rng = np.random.default_rng(seed)
    root = Path(root)
    colours = rng.integers(40, 256, (classes, 3))
    written: list[Path] = []
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            wnid = f"n{c + 1:08d}"
            (root / split / wnid).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
                noise = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
                img = np.asarray(Image.fromarray(noise).resize((w, h), Image.Resampling.BICUBIC)).copy()
                yy, xx = np.mgrid[:h, :w]
                disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (min(h, w) / 4) ** 2
                img[disc] = colours[c]
                path = root / split / wnid / f"{wnid}_{i}.JPEG"
                Image.fromarray(img).save(path, "JPEG", quality=90)
                if split == "train":
                    written.append(path)
    for path in written[len(written) - corrupt :] if corrupt else []:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return root
