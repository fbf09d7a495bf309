"""Turning a `Config` into the training objects: the method, CompMod, the augmentations and the training
step around them (datasets: `compmod.data.build`, one layer down, so that evaluation can build them too)."""

from __future__ import annotations

import torch

from compmod.config.schema import Config
from compmod.data.augment import BatchAugment, build_views
from compmod.engine.online_probe import OnlineProbe
from compmod.engine.optim import build_optimizer
from compmod.engine.step import TrainStep
from compmod.methods import METHODS, SSLMethod
from compmod.models import build_backbone
from compmod.models.sync_batchnorm import convert_sync_batchnorm
from compmod.regularizers import CompMod


def build_method(cfg: Config, in_channels: int, image_size: int) -> SSLMethod:
    """Backbone + the registered method around it. `model.cifar_stem: null` -> CIFAR stem for <= 64 px."""
    cifar_stem = cfg.model.cifar_stem if cfg.model.cifar_stem is not None else image_size <= 64
    backbone, feat_dim = build_backbone(
        cfg.model.backbone, in_channels, cifar_stem, image_size, cfg.model.timm_args
    )
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


def build_train_step(
    cfg: Config,
    channels: int,
    image_size: int,
    device: torch.device,
    steps_per_epoch: int,
    with_compmod: bool = True,
    num_classes: int | None = None,
) -> TrainStep:
    """The method (SyncBatchNorm when `train.sync_bn`, in `train.dtype` on `device`), its optimiser, CompMod
    when `compmod.enabled` (and `with_compmod`), and the `TrainStep` with `train`'s speed options: what
    the Trainer trains, and what `compmod plan` and the benchmarks measure. With `num_classes` (the
    pretraining images have labels), `eval.enabled` and `eval.online_linear`, the online linear probe."""
    dtype = getattr(torch, cfg.train.dtype)
    method = build_method(cfg, channels, image_size)
    if cfg.train.sync_bn:
        convert_sync_batchnorm(method)
    method.to(device, dtype)
    compmod = build_compmod(cfg, method, steps_per_epoch) if with_compmod else None
    if compmod is not None:
        compmod.to(device, dtype)
    t = cfg.train
    optimizer = build_optimizer([method], t)
    probe = None
    if cfg.eval.enabled and cfg.eval.online_linear and num_classes is not None:
        probe = OnlineProbe(method.feat_dim, num_classes, cfg.eval.online_linear_lr, t.lr, device, t.seed + 5)
    return TrainStep(
        method, optimizer, compmod, probe=probe, device=device, precision=t.precision,
        channels_last=t.channels_last, compile=t.compile,
    )  # fmt: skip


def method_label(cfg: Config) -> str:
    """`simclr`, or `simclr+compmod` when CompMod is attached."""
    return cfg.method.name + ("+compmod" if cfg.compmod.enabled else "")
