"""The only place that turns a `Config` into objects: datasets, the method, the augmentations."""

from __future__ import annotations

from compmod.config.schema import Config
from compmod.data.augment import BatchAugment, build_views
from compmod.data.datasets import ImageDataset, load_dataset
from compmod.errors import ConfigError
from compmod.methods import METHODS, SSLMethod
from compmod.models import build_backbone
from compmod.regularizers import CompMod


def build_dataset(cfg: Config, split: str, prepare: bool = True, workers: int = 1) -> ImageDataset:
    """Load `split` ("pretrain", "train" or "test"); `data.subset`, `eval.train_subset` and
    `eval.test_subset` keep the first N images of each. `prepare`, `workers`: whether a missing prepared
    store (imagenet, imagenet100) may be decoded now, and by how many processes."""
    d = cfg.data
    ds = load_dataset(
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


def build_method(cfg: Config, in_channels: int, image_size: int) -> SSLMethod:
    """Backbone + the registered method around it. `model.cifar_stem: null` -> CIFAR stem for <= 64 px."""
    cifar_stem = cfg.model.cifar_stem if cfg.model.cifar_stem is not None else image_size <= 64
    backbone, feat_dim = build_backbone(cfg.model.backbone, in_channels, cifar_stem)
    return METHODS.get(cfg.method.name).build(backbone, feat_dim, cfg.method.params)


def build_augmentations(
    cfg: Config, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[BatchAugment, BatchAugment]:
    return build_views(cfg.augment, image_size, mean, std)


def build_compmod(cfg: Config, method: SSLMethod, steps_per_epoch: int) -> CompMod | None:
    """The CompMod regularizer of `cfg.compmod`, or None when it is not enabled."""
    c = cfg.compmod
    if not c.enabled:
        return None
    return CompMod(
        method.feat_dim,
        cfg.method.params.proj_dim,
        fusion=c.fusion,
        mixup_alpha=c.mixup_alpha,
        lambda1=c.lambda1,
        lambda2=c.lambda2,
        order=c.order,
        eps_sq=c.eps_sq,
        lambda_warmup_steps=round(c.lambda_warmup_epochs * steps_per_epoch),
        scale=c.scale,
        detach_input=c.detach_input,
        mode=c.meta.mode,
        r=c.meta.r,
        every=c.meta.every,
        optimizer=c.meta.optimizer,
        lr=c.meta.lr,
        momentum=c.meta.momentum,
        seed=cfg.train.seed + 2,
    )


def method_label(cfg: Config) -> str:
    """`simclr`, or `simclr+compmod` when CompMod is attached."""
    return cfg.method.name + ("+compmod" if cfg.compmod.enabled else "")
