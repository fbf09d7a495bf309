"""The only place that turns a `Config` into objects: datasets, the method, the augmentations."""

from __future__ import annotations

from compmod.config.schema import Config
from compmod.data.augment import BatchAugment, build_views
from compmod.data.datasets import ImageDataset, load_dataset
from compmod.methods import METHODS, SSLMethod
from compmod.models import build_backbone


def build_dataset(cfg: Config, split: str) -> ImageDataset:
    """Load `split` ("pretrain", "train" or "test"); `data.subset` keeps the first N pretraining images."""
    d = cfg.data
    ds = load_dataset(
        d.name,
        split,
        root=d.root,
        image_size=d.image_size,
        channels=d.channels,
        holdout_fraction=d.holdout_fraction,
        seed=cfg.train.seed,
    )
    n = d.subset if split == "pretrain" else (cfg.eval.train_subset if split == "train" else None)
    if n is not None and n < len(ds):
        ds.images, ds.labels = ds.images[:n].contiguous(), ds.labels[:n].contiguous()
    return ds


def build_method(cfg: Config, in_channels: int, image_size: int) -> SSLMethod:
    """Backbone + the registered method around it. `model.cifar_stem: null` -> CIFAR stem for <= 64 px."""
    cifar_stem = cfg.model.cifar_stem if cfg.model.cifar_stem is not None else image_size <= 64
    backbone, feat_dim = build_backbone(cfg.model.backbone, in_channels, cifar_stem)
    return METHODS.get(cfg.method.name).build(backbone, feat_dim, cfg.method.params)


def build_augmentations(
    cfg: Config, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[BatchAugment, BatchAugment]:
    return build_views(cfg.augment, image_size, mean, std)
