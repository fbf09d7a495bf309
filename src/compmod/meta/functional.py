"""Stateless calls of a module: parameters swapped in, BatchNorm buffers cloned so no pass changes them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

Views = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # loss, h1, h2, z1, z2


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    """omega: the parameters the main optimiser trains (those that require grad)."""
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def cloned_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every buffer: a look-ahead pass updates these, never the real running statistics."""
    return {n: b.clone() for n, b in module.named_buffers()}


def unpack(out: Any) -> Views:
    """(loss, h1, h2, z1, z2) from a `StepOutput` or a `(loss, (h1, h2), (z1, z2))` tuple."""
    if hasattr(out, "loss") and hasattr(out, "h") and hasattr(out, "z"):
        return out.loss, out.h[0], out.h[1], out.z[0], out.z[1]
    try:
        loss, (h1, h2), (z1, z2) = out
    except (TypeError, ValueError):
        raise TypeError(
            "the model must return a StepOutput or a tuple (loss, (h1, h2), (z1, z2)); "
            f"got {type(out).__name__}"
        ) from None
    return loss, h1, h2, z1, z2


def stateless_forward(module: nn.Module, params: Mapping[str, torch.Tensor], *args: torch.Tensor) -> Views:
    """module(*args) with `params` in place of its trainable parameters and cloned buffers."""
    return unpack(functional_call(module, ({**params}, cloned_buffers(module)), args, strict=False))


def head_call(
    head: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor, real_buffers: bool
) -> torch.Tensor:
    """g_xi(x) with `params` as xi; `real_buffers=False` leaves the head's BatchNorm statistics untouched."""
    buffers = dict(head.named_buffers()) if real_buffers else cloned_buffers(head)
    return functional_call(head, ({**params}, buffers), (x,), strict=False)


def zeros_for_none(grads: tuple[torch.Tensor | None, ...], like: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like, strict=True)]


ModelFn = Callable[..., Any]
