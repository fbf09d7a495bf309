"""Fashion-MNIST (Xiao et al. 2017) from its IDX files; Debian ships them in dataset-fashion-mnist."""

from __future__ import annotations

from pathlib import Path

import torch

from compmod.data.datasets.base import LoadOptions, RawSplit, find_dataset_dir, register_dataset, require_file
from compmod.data.datasets.idx import read_idx
from compmod.errors import DataError

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_PREFIX = {"pretrain": "train", "train": "train", "test": "t10k"}


def _candidates(stem: str) -> list[str]:
    return [f"{stem}.gz", stem]


@register_dataset(
    "fashion_mnist",
    hint="install it with `apt-get install dataset-fashion-mnist` (files land in "
    "/usr/share/datasets/fashion-mnist) or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz into one of those folders",
    subdirs=("fashion-mnist", "FashionMNIST/raw"),
    standard_paths=("/usr/share/datasets/fashion-mnist", "./data/FashionMNIST/raw"),
)
def load_fashion_mnist(
    split: str,
    paths: list[Path],
    options: LoadOptions,
) -> RawSplit:
    """60k train / 10k test grey images, (N, 1, 28, 28) uint8, 10 classes; pretrain is train."""
    markers = _candidates("train-images-idx3-ubyte") + _candidates("t10k-images-idx3-ubyte")
    folder = find_dataset_dir("fashion_mnist", paths, markers)
    prefix = _PREFIX[split]
    img_path = require_file("fashion_mnist", folder, _candidates(f"{prefix}-images-idx3-ubyte"))
    lbl_path = require_file("fashion_mnist", folder, _candidates(f"{prefix}-labels-idx1-ubyte"))
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.dtype.itemsize != 1:
        raise DataError(f"{img_path} holds {images.dtype} {images.shape}, expected uint8 (N, H, W) images")
    if labels.shape != images.shape[:1]:
        raise DataError(f"{lbl_path} holds {labels.shape} labels for {images.shape[0]} images in {img_path}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise DataError(f"{lbl_path} has labels outside 0..{len(FASHION_MNIST_CLASSES) - 1}")
    return RawSplit(
        torch.from_numpy(images.astype("uint8")).unsqueeze(1).contiguous(),
        torch.from_numpy(labels.astype("int64")),
        list(FASHION_MNIST_CLASSES),
    )
