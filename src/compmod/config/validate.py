"""Range checks on a built `Config` that its types alone do not express."""

from __future__ import annotations

from typing import Any

from compmod.config.augment import AUGMENT_OPS
from compmod.config.schema import CompModConfig, Config
from compmod.errors import ConfigError, did_you_mean

Check = tuple[bool, str, Any, str]  # (passes, key, value, what is accepted)


def validate(cfg: Config) -> None:
    """Range checks that types alone do not express; the first failing one is a ConfigError naming the key,
    its value and what is accepted."""
    for ok, key, value, accepted in [*_checks(cfg), *_compmod_checks(cfg.compmod)]:
        if not ok:
            raise ConfigError(f"config key {key}: {value!r} is not accepted; expected {accepted}")
    for op in cfg.augment.ops or []:
        if op not in AUGMENT_OPS:
            raise ConfigError(
                f"config key augment.ops: unknown op {op!r}{did_you_mean(op, AUGMENT_OPS)}; "
                f"choose from: {', '.join(AUGMENT_OPS)}"
            )
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
        raise ConfigError(
            f"config key train.device: {dev!r} is not accepted; expected auto, cpu, cuda or cuda:N"
        )


def _checks(cfg: Config) -> list[Check]:
    return [
        (cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, "an integer >= 1"),
        (cfg.train.batch_size >= 2, "train.batch_size", cfg.train.batch_size, "an integer >= 2"),
        (cfg.train.lr > 0, "train.lr", cfg.train.lr, "a float > 0"),
        (cfg.train.weight_decay >= 0, "train.weight_decay", cfg.train.weight_decay, "a float >= 0"),
        (cfg.train.warmup_epochs >= 0, "train.warmup_epochs", cfg.train.warmup_epochs, "a float >= 0"),
        (cfg.data.subset is None or cfg.data.subset >= 2, "data.subset", cfg.data.subset, "null or >= 2"),
        (
            cfg.data.image_size is None or cfg.data.image_size >= 8,
            "data.image_size",
            cfg.data.image_size,
            "null or an integer >= 8",
        ),
        (cfg.data.channels in (None, 1, 3), "data.channels", cfg.data.channels, "null, 1 or 3"),
        (
            0 < cfg.data.holdout_fraction < 1,
            "data.holdout_fraction",
            cfg.data.holdout_fraction,
            "a float in (0, 1)",
        ),
        (cfg.eval.knn_k >= 1, "eval.knn_k", cfg.eval.knn_k, "an integer >= 1"),
        (
            bool(cfg.eval.semi_fractions) and all(0 < f <= 1 for f in cfg.eval.semi_fractions),
            "eval.semi_fractions",
            cfg.eval.semi_fractions,
            "a non-empty list of floats in (0, 1]",
        ),
        (cfg.eval.semi_epochs >= 1, "eval.semi_epochs", cfg.eval.semi_epochs, "an integer >= 1"),
        (cfg.eval.semi_lr > 0, "eval.semi_lr", cfg.eval.semi_lr, "a float > 0"),
        (cfg.eval.semi_head_lr > 0, "eval.semi_head_lr", cfg.eval.semi_head_lr, "a float > 0"),
        (cfg.eval.semi_batch_size >= 2, "eval.semi_batch_size", cfg.eval.semi_batch_size, "an integer >= 2"),
        (
            cfg.train.max_steps is None or cfg.train.max_steps >= 1,
            "train.max_steps",
            cfg.train.max_steps,
            "null or an integer >= 1",
        ),
        (
            cfg.eval.test_subset is None or cfg.eval.test_subset >= 1,
            "eval.test_subset",
            cfg.eval.test_subset,
            "null or an integer >= 1",
        ),
        (
            cfg.eval.monitor_every is None or cfg.eval.monitor_every >= 1,
            "eval.monitor_every",
            cfg.eval.monitor_every,
            "null or an integer >= 1",
        ),
        (cfg.eval.monitor_images >= 10, "eval.monitor_images", cfg.eval.monitor_images, "an integer >= 10"),
        (
            cfg.train.checkpoint_every is None or cfg.train.checkpoint_every >= 1,
            "train.checkpoint_every",
            cfg.train.checkpoint_every,
            "null or an integer >= 1",
        ),
    ]


def _compmod_checks(cm: CompModConfig) -> list[Check]:
    return [
        (cm.order >= 1, "compmod.order", cm.order, "an integer >= 1 (even recommended)"),
        (cm.lambda1 >= 0, "compmod.lambda1", cm.lambda1, "a float >= 0"),
        (cm.lambda2 >= 0, "compmod.lambda2", cm.lambda2, "a float >= 0"),
        (cm.eps_sq > 0, "compmod.eps_sq", cm.eps_sq, "a float > 0"),
        (cm.meta.every >= 1, "compmod.meta.every", cm.meta.every, "an integer >= 1"),
        (
            cm.mixup_alpha is None or 0 <= cm.mixup_alpha <= 1,
            "compmod.mixup_alpha",
            cm.mixup_alpha,
            "null or a float in [0, 1]",
        ),
        (cm.meta.r is None or cm.meta.r > 0, "compmod.meta.r", cm.meta.r, "null or a float > 0"),
    ]
