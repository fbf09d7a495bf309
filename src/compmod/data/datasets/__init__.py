"""Datasets held in memory as uint8 tensors; loaders registered by name in `DATASETS`.

Example::

    ds = load_dataset("fashion_mnist", "train")  # images (60000, 1, 28, 28) uint8, labels (60000,)
"""

# Importing the loader modules registers them in DATASETS.
from compmod.data.datasets import (  # noqa: F401
    cifar,
    fashion_mnist,
    folder,
    imagenet,
    stl10,
    tiny_imagenet,
    two_parts,
)
from compmod.data.datasets.base import DATASETS, SPLITS, ImageDataset, LoadOptions, dataset_search_paths
from compmod.data.datasets.load import load_dataset

__all__ = ["DATASETS", "SPLITS", "ImageDataset", "LoadOptions", "dataset_search_paths", "load_dataset"]
