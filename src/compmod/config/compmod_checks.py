"""Every check of CompMod's values, in one place: config validation reports them under `compmod.` before
any work starts, and the `CompMod` constructor (used without a config) raises the same messages."""

from __future__ import annotations

from typing import Any

from compmod.errors import ConfigError

Check = tuple[bool, str, Any, str]  # (passes, key under `compmod.`, value, what is accepted)


def compmod_checks(
    *,
    lambda1: float,
    lambda2: float,
    order: int,
    eps_sq: float,
    lambda_warmup: float,
    mixup_alpha: float | None,
    every: int,
    r: float | None,
    lr: float | None,
    momentum: float,
) -> list[Check]:
    """`lambda_warmup`: the warm-up length in epochs (config) or steps (constructor); both must be >= 0."""
    return [
        (
            order >= 2 and order % 2 == 0,
            "order",
            order,
            "an even integer >= 2 (odd orders of the log-det series are unbounded below)",
        ),
        (lambda_warmup >= 0, "lambda_warmup_epochs", lambda_warmup, "a float >= 0"),
        (lambda1 >= 0, "lambda1", lambda1, "a float >= 0"),
        (lambda2 >= 0, "lambda2", lambda2, "a float >= 0"),
        (eps_sq > 0, "eps_sq", eps_sq, "a float > 0"),
        (
            mixup_alpha is None or 0 <= mixup_alpha <= 1,
            "mixup_alpha",
            mixup_alpha,
            "null or a float in [0, 1]",
        ),
        (every >= 1, "meta.every", every, "an integer >= 1"),
        (r is None or r > 0, "meta.r", r, "null or a float > 0"),
        (lr is None or lr > 0, "meta.lr", lr, "null or a float > 0"),
        (0 <= momentum < 1, "meta.momentum", momentum, "a float in [0, 1)"),
    ]


def require_compmod(checks: list[Check]) -> None:
    """Raise the `ConfigError` (a ValueError) of the first failing check."""
    for ok, key, value, accepted in checks:
        if not ok:
            raise ConfigError(f"config key compmod.{key}: {value!r} is not accepted; expected {accepted}")
