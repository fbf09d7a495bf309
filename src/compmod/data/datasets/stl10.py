"""STL-10 (Coates et al. 2011) from the binary release ``stl10_binary``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from compmod.data.datasets.base import LoadOptions, RawSplit, find_dataset_dir, register_dataset, require_file
from compmod.errors import DataError

STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_IMAGE_BYTES = 3 * 96 * 96
_CHUNK = 2048


def _num_images(path: Path) -> int:
    size = path.stat().st_size
    if size % _IMAGE_BYTES:
        raise DataError(
            f"{path} has {size} bytes, not a multiple of one 3x96x96 image ({_IMAGE_BYTES} bytes)"
        )
    return size // _IMAGE_BYTES


def _read_images_into(path: Path, out: torch.Tensor) -> None:
    """Fill `out` (N, 3, 96, 96) uint8 from an STL-10 ``*_X.bin`` file of exactly N images.

    Each image is stored channel by channel, each channel column-major; the official reader does
    ``np.transpose(raw.reshape(N, 3, 96, 96), (0, 3, 2, 1))`` to (N, H, W, C), so (N, C, H, W) is a
    swap of the last two axes.
    """
    n = out.shape[0]
    if n == 0:
        return
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, 96, 96))
    for i in range(0, n, _CHUNK):
        block = np.ascontiguousarray(raw[i : i + _CHUNK].transpose(0, 1, 3, 2))
        out[i : i + _CHUNK] = torch.from_numpy(block)
    del raw


def _read_labels(path: Path, n: int) -> torch.Tensor:
    y = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if y.shape != (n,) or (n and (y.min() < 1 or y.max() > len(STL10_CLASSES))):
        raise DataError(f"{path} must hold {n} labels in 1..{len(STL10_CLASSES)}, found {y.size} bytes")
    return torch.from_numpy(y - 1)


def _class_names(folder: Path) -> list[str]:
    path = folder / "class_names.txt"
    if not path.is_file():
        return list(STL10_CLASSES)
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != len(STL10_CLASSES):
        raise DataError(f"{path} lists {len(names)} class names, expected {len(STL10_CLASSES)}")
    return names


@register_dataset(
    "stl10",
    hint="download stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/ and extract it into "
    "one of those folders",
    subdirs=("stl10_binary",),
    standard_paths=("./data/stl10_binary",),
)
def load_stl10(
    split: str,
    paths: list[Path],
    options: LoadOptions,
) -> RawSplit:
    """5k train / 8k test / 100k unlabelled colour images, (N, 3, 96, 96) uint8, 10 classes.

    pretrain = train followed by unlabelled (label -1); without ``unlabeled_X.bin`` it is train alone,
    with a warning.
    """
    folder = find_dataset_dir("stl10", paths, ["train_X.bin", "test_X.bin"])
    prefix = "test" if split == "test" else "train"
    x_path = require_file("stl10", folder, [f"{prefix}_X.bin"])
    y_path = require_file("stl10", folder, [f"{prefix}_y.bin"])
    n = _num_images(x_path)
    labels = _read_labels(y_path, n)
    unlabeled = folder / "unlabeled_X.bin"
    n_extra = 0
    if split == "pretrain":
        if unlabeled.is_file():
            n_extra = _num_images(unlabeled)
        else:
            warnings.warn(
                f"{unlabeled} not found: STL-10 pretrain split uses the {n} train images only", stacklevel=3
            )
    images = torch.empty((n + n_extra, 3, 96, 96), dtype=torch.uint8)
    _read_images_into(x_path, images[:n])
    if n_extra:
        _read_images_into(unlabeled, images[n:])
        labels = torch.cat([labels, torch.full((n_extra,), -1, dtype=torch.int64)])
    return RawSplit(images, labels, _class_names(folder))
