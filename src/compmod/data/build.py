"""`build_dataset`: the one place that turns a `Config` into a dataset split (training, evaluation,
`compmod prepare-data` and the reports all load through it)."""

from __future__ import annotations

import torch

from compmod.config.schema import Config
from compmod.data.datasets import ImageDataset, load_dataset
from compmod.data.datasets.holdout import holdout_mask
from compmod.data.datasets.imagenet import PREPARED_DATASETS
from compmod.errors import ConfigError

# The validation split does not follow train.seed: every cell of a sweep is scored on the same images.
VALIDATION_SEED = 0


def build_dataset(cfg: Config, split: str, prepare: bool = True, workers: int = 1) -> ImageDataset:
    """Load `split` ("pretrain", "train" or "test"); `data.subset`, `eval.train_subset` and
    `eval.test_subset` keep the first N images of each. With `data.validation_fraction` the "test" split is
    that stratified part of the labelled training images (`validation_split`). `prepare`, `workers`:
    whether a missing prepared store (imagenet, imagenet100) may be decoded now, and by how many
    processes."""
    d = cfg.data
    ds = (
        _load(cfg, split, prepare, workers)
        if d.validation_fraction is None
        else validation_split(cfg, split, prepare, workers)
    )
    n = {"pretrain": d.subset, "train": cfg.eval.train_subset, "test": cfg.eval.test_subset}[split]
    if split == "pretrain" and n is not None and n > len(ds):  # pretraining on fewer images than asked
        raise ConfigError(
            f"config key data.subset: {n} is not accepted; the {split} split of {d.name} holds only "
            f"{len(ds)} images (expected null or at most {len(ds)})"
        )
    if n is not None and n < len(ds):
        ds.images, ds.labels = ds.images[:n].contiguous(), ds.labels[:n].contiguous()
        ds.variable = ds.variable.subset(n) if ds.variable is not None else None
    return ds


def validation_split(cfg: Config, split: str, prepare: bool = True, workers: int = 1) -> ImageDataset:
    """`data.validation_fraction` f: a class-stratified fraction f of the labelled training images (drawn
    with `VALIDATION_SEED`) is the "test" split; "train" and "pretrain" are the rest. The dataset's own
    test split is never read, so hyper-parameters chosen on it leave the test set untouched. Every
    in-memory dataset's pretrain split starts with its train split (it is the train split, or STL-10's
    train followed by unlabelled images), so the held-out images are removed from that prefix."""
    if cfg.data.name in PREPARED_DATASETS:  # a boolean index would copy the memory-mapped split
        raise ConfigError(
            f"config key data.validation_fraction: {cfg.data.validation_fraction!r} is not accepted for "
            f"{cfg.data.name}, which is read from a prepared store; expected null"
        )
    train = _load(cfg, "train", prepare, workers)
    held = torch.from_numpy(holdout_mask(train.labels.numpy(), cfg.data.validation_fraction, VALIDATION_SEED))
    ds = train if split != "pretrain" else _load(cfg, "pretrain", prepare, workers)
    if split == "pretrain" and not torch.equal(ds.labels[: len(train)], train.labels):
        raise ConfigError(
            f"config key data.validation_fraction: the pretrain split of {cfg.data.name} does not start with "
            "its train split, so the validation images cannot be removed from it; expected null"
        )
    keep = held if split == "test" else torch.cat([~held, torch.ones(len(ds) - len(train), dtype=torch.bool)])
    ds.images, ds.labels = ds.images[keep].contiguous(), ds.labels[keep].contiguous()
    return ds


def _load(cfg: Config, split: str, prepare: bool, workers: int) -> ImageDataset:
    d = cfg.data
    return load_dataset(
        d.name,
        split,
        root=d.root,
        image_size=d.image_size,
        channels=d.channels,
        holdout_fraction=d.holdout_fraction,
        seed=cfg.train.seed,
        on_bad_image=d.on_bad_image,
        store_side=d.store_side,
        store_dir=d.store_dir,
        prepare=prepare,
        workers=workers,
    )
