"""`load_dataset`: validate the request, dispatch to the registered loader, convert, measure."""

from __future__ import annotations

import torch

from compmod.data.datasets.base import (
    BAD_IMAGE_POLICIES,
    DATASETS,
    SPLITS,
    ImageDataset,
    LoadOptions,
    dataset_search_paths,
)
from compmod.data.datasets.convert import channel_stats, convert_channels, resize_images
from compmod.errors import ConfigError, DataError


def _check_args(
    split: str, image_size: int | None, channels: int | None, holdout_fraction: float, on_bad_image: str
) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ConfigError(f"image_size must be a positive integer or None (native size), got {image_size!r}")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels must be 1, 3 or None (native), got {channels!r}")
    if not 0 <= holdout_fraction < 1:
        raise ConfigError(f"holdout_fraction must be in [0, 1), got {holdout_fraction!r}")
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ConfigError(
            f"on_bad_image must be one of: {', '.join(BAD_IMAGE_POLICIES)}; got {on_bad_image!r}"
        )


def load_dataset(
    name: str,
    split: str,
    root: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    on_bad_image: str = "fail",
    *,
    store_side: int | None = None,
    store_dir: str | None = None,
    prepare: bool = True,
    workers: int = 1,
) -> ImageDataset:
    """Load one split of a registered dataset into memory. Nothing is ever downloaded.

    Args:
        name: a name in `DATASETS` (fashion_mnist, cifar10, cifar100, stl10, folder).
        split: "pretrain" (self-supervised images, labels may be -1), "train" (labelled train split)
            or "test".
        root: the folder holding the dataset; when given it is the only place searched (with its
            standard sub-folder, e.g. root/cifar-10-batches-py). See `dataset_search_paths`.
        image_size: None keeps the native size; else images become image_size x image_size
            (antialiased bilinear).
        channels: None keeps the native count (1 grey, 3 colour); 1 from colour is ITU-R 601 luma,
            3 from grey repeats the channel.
        holdout_fraction: for folders without test/ or val/: the seeded, stratified fraction of train
            used as "test" (and removed from "train" and "pretrain").
        seed: seeds that held-out draw; same seed, same split.
        on_bad_image: for datasets stored one file per image (`folder`): "fail" stops at the first
            unreadable, corrupt, truncated or empty file with a `DataError` naming it; "skip" leaves such
            files out of the split (with their labels), logs each one and a summary on the
            ``compmod.data`` logger at WARNING, and lists them in `ImageDataset.skipped`. The held-out
            draw is made before, so a skipped file never moves another one between train and test.
            Datasets stored as arrays (fashion_mnist, cifar10/100, stl10) have no per-image files and
            ignore it.
        store_side, store_dir, prepare, workers: datasets read through a prepared store (imagenet,
            imagenet100; `compmod.data.datasets.store`): the stored shorter side (None: image_size /
            0.875), the stores' folder (None: beside the decode cache), whether a missing store may be
            decoded now (else a `DataError` naming `compmod prepare-data`), and how many processes decode.

    Returns:
        The split: uint8 images (N, C, H, W), int64 labels (N,), classes, per-channel mean/std.

    Raises:
        ConfigError: unknown name (with a did-you-mean), split, or bad option.
        DatasetNotFoundError: the files are in none of the searched folders (the message lists them).
        DataError: a file exists but cannot be read (under on_bad_image="skip": every image of the
            split is unreadable).
    """
    loader = DATASETS.get(name)
    _check_args(split, image_size, channels, holdout_fraction, on_bad_image)
    options = LoadOptions(
        image_size, channels, holdout_fraction, seed, on_bad_image, store_side, store_dir, prepare, workers
    )
    raw = loader(split, dataset_search_paths(name, root), options)
    if raw.images.shape[0] == 0:
        where = f" in {root}" if root is not None else ""
        raise DataError(f"dataset {name!r}{where} has no images for split {split!r}")
    images = raw.images
    if channels == 1:  # fewer channels first: less to resize
        images = resize_images(convert_channels(images, channels), image_size)
    else:
        images = convert_channels(resize_images(images, image_size), channels)
    mean, std = channel_stats(images)
    return ImageDataset(
        images,
        raw.labels.to(device="cpu", dtype=torch.int64).contiguous(),
        list(raw.classes),
        mean,
        std,
        name,
        tuple(raw.skipped),
        raw.variable,
    )
