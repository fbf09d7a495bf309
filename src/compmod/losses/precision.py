"""Every SSL loss is computed in float32 (or wider) whatever the autocast dtype of the network around it.

Under bf16 autocast a loss's GEMMs would otherwise run on 8-bit mantissas: NT-Xent's logits s / t and
Barlow Twins' cross-correlation came out 3.5e-4 and 1.2e-3 off (relative, tests/losses/test_loss_precision),
and their gradients with them. CompMod's own losses (`mec.py`) always ran in float32 the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_HALF = (torch.float16, torch.bfloat16)


def float32_loss(fn: F) -> F:
    """Decorate a loss: it runs with autocast off and its half-precision tensor arguments upcast to
    float32 (float32 and float64 arguments pass unchanged, so float64 checks stay float64)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device = next(
            (a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu"
        )
        with torch.autocast(device_type=device, enabled=False):
            return fn(*map(_upcast, args), **{k: _upcast(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def _upcast(value: Any) -> Any:
    return value.float() if isinstance(value, torch.Tensor) and value.dtype in _HALF else value
