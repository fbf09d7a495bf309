"""Range checks on a built `Config` that its types alone do not express."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

from compmod.config.augment import AUGMENT_OPS
from compmod.config.compmod_checks import compmod_checks
from compmod.config.schema import CompModConfig, Config, EvalConfig
from compmod.errors import ConfigError, did_you_mean

Check = tuple[bool, str, Any, str]  # (passes, key, value, what is accepted)

# torch.manual_seed takes at most 2**64 - 1 and the trainer seeds generators with seed * 1000 + epoch;
# numpy's legacy seeding and Lightning's seed_everything take [0, 2**32 - 1], which fits both.
MAX_SEED = 2**32 - 1
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def validate(cfg: Config) -> None:
    """Range checks that types alone do not express, all made before any work starts; the first failing
    one is a ConfigError naming the key, its value and what is accepted."""
    _check_finite(cfg, "")
    checks = [
        *_checks(cfg),
        *_train_checks(cfg),
        *_eval_checks(cfg.eval),
        *_compmod_checks(cfg.compmod),
        *_method_checks(cfg),
    ]
    for ok, key, value, accepted in checks:
        if not ok:
            raise ConfigError(f"config key {key}: {value!r} is not accepted; expected {accepted}")
    for op in cfg.augment.ops or []:
        if op not in AUGMENT_OPS:
            raise ConfigError(
                f"config key augment.ops: unknown op {op!r}{did_you_mean(op, AUGMENT_OPS)}; "
                f"choose from: {', '.join(AUGMENT_OPS)}"
            )
    _check_run_dir(cfg.train.run_dir)


def _check_finite(node: Any, path: str) -> None:
    """Every float in the config (method parameters included) is finite: inf and nan are never meant."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{path}.{f.name}" if path else f.name
        if f.name == "params" and path == "method":
            key = "method"
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                _check_finite(v, key)
            elif isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"config key {key}: {v!r} is not accepted; expected a finite number")


def _check_run_dir(run_dir: str) -> None:
    """train.run_dir must be a directory or creatable as one: no part of it may be an existing file."""
    if not run_dir.strip():
        raise ConfigError("config key train.run_dir: '' is not accepted; expected a directory path")
    path = Path(run_dir)
    for part in [path, *path.parents]:
        if part.exists():
            if not part.is_dir():
                where = "is" if part == path else f"is inside {str(part)!r}, which is"
                raise ConfigError(
                    f"config key train.run_dir: {run_dir!r} is not accepted; it {where} not a directory "
                    "(expected a directory path)"
                )
            return


def _train_checks(cfg: Config) -> list[Check]:
    t = cfg.train
    return [
        (t.log_every >= 1, "train.log_every", t.log_every, "an integer >= 1"),
        (0 <= t.momentum < 1, "train.momentum", t.momentum, "a float in [0, 1)"),
        (0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", t.min_lr_ratio, "a float in [0, 1]"),
        (0 <= t.seed <= MAX_SEED, "train.seed", t.seed, f"an integer in [0, {MAX_SEED}] (2**32 - 1)"),
        (t.threads is None or t.threads >= 1, "train.threads", t.threads, "null or an integer >= 1"),
        (
            t.warmup_start_lr is None or t.warmup_start_lr >= 0,
            "train.warmup_start_lr",
            t.warmup_start_lr,
            "null or a float >= 0",
        ),
        (t.lars.eta > 0, "train.lars.eta", t.lars.eta, "a float > 0"),
        (t.lars.eps >= 0, "train.lars.eps", t.lars.eps, "a float >= 0"),
        (
            not t.lars.clip_lr or t.lars.rule == "solo",
            "train.lars.clip_lr",
            t.lars.clip_lr,
            "false with train.lars.rule: fair (clipping is part of the solo rule)",
        ),
        (
            bool(_DEVICE.match(t.device)),
            "train.device",
            t.device,
            "auto, cpu, mps, cuda or cuda:N (N an integer)",
        ),
    ]


def _eval_checks(e: EvalConfig) -> list[Check]:
    return [
        (e.knn_weighted_k >= 1, "eval.knn_weighted_k", e.knn_weighted_k, "an integer >= 1"),
        (e.knn_temperature > 0, "eval.knn_temperature", e.knn_temperature, "a float > 0"),
        (e.batch_size >= 1, "eval.batch_size", e.batch_size, "an integer >= 1"),
        (e.linear_epochs >= 1, "eval.linear_epochs", e.linear_epochs, "an integer >= 1"),
        (e.linear_lr > 0, "eval.linear_lr", e.linear_lr, "a float > 0"),
        (e.linear_batch_size >= 1, "eval.linear_batch_size", e.linear_batch_size, "an integer >= 1"),
        (
            e.train_subset is None or e.train_subset >= 1,
            "eval.train_subset",
            e.train_subset,
            "null or an integer >= 1",
        ),
    ]


def _method_checks(cfg: Config) -> list[Check]:
    """The method's own checks (`params.checks(batch_size)`, e.g. W-MSE's sub-batch size), when it has some;
    keys are relative to `method.`."""
    checks = getattr(cfg.method.params, "checks", None)
    if checks is None:
        return []
    return [
        (ok, f"method.{key}", value, accepted) for ok, key, value, accepted in checks(cfg.train.batch_size)
    ]


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
            cfg.eval.pixel_knn_max_images >= 1,
            "eval.pixel_knn_max_images",
            cfg.eval.pixel_knn_max_images,
            ">= 1",
        ),
        (cfg.eval.pixel_knn_size >= 1, "eval.pixel_knn_size", cfg.eval.pixel_knn_size, "an integer >= 1"),
        (
            cfg.data.store_side is None or cfg.data.store_side >= (cfg.data.image_size or 1),
            "data.store_side",
            cfg.data.store_side,
            "null or an integer >= data.image_size",
        ),
        (
            cfg.data.validation_fraction is None or 0 < cfg.data.validation_fraction < 1,
            "data.validation_fraction",
            cfg.data.validation_fraction,
            "null or a float in (0, 1)",
        ),
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
        (cfg.eval.online_linear_lr > 0, "eval.online_linear_lr", cfg.eval.online_linear_lr, "a float > 0"),
        (cfg.eval.monitor_images >= 10, "eval.monitor_images", cfg.eval.monitor_images, "an integer >= 10"),
        (
            cfg.train.checkpoint_every is None or cfg.train.checkpoint_every >= 1,
            "train.checkpoint_every",
            cfg.train.checkpoint_every,
            "null or an integer >= 1",
        ),
    ]


def _compmod_checks(cm: CompModConfig) -> list[Check]:
    values = compmod_checks(
        lambda1=cm.lambda1,
        lambda2=cm.lambda2,
        order=cm.order,
        eps_sq=cm.eps_sq,
        lambda_warmup=cm.lambda_warmup_epochs,
        mixup_alpha=cm.mixup_alpha,
        every=cm.meta.every,
        r=cm.meta.r,
        lr=cm.meta.lr,
        momentum=cm.meta.momentum,
    )
    return [(ok, f"compmod.{key}", value, accepted) for ok, key, value, accepted in values]
