"""A lean forward-mode rule for training-mode BatchNorm, used inside the `jvp` hypergradient.

torch's generic forward-mode formula for `native_batch_norm` runs about twenty elementwise passes over
the activation; on the small CNN (CPU, batch 256) BatchNorm was ~40 % of the whole JVP. With
x_hat = (x - mu) * rstd over the batch (and spatial) dimensions and y = gamma * x_hat + beta, the tangent is

    dy = a * dx + x_hat * (dgamma - a * c) + (dbeta - a * dmu),   a = gamma * rstd,
    dmu = mean(dx),  c = mean(dx * x_hat)

(differentiate x_hat = (x - mu) / sqrt(var + eps): d var = 2 mean((x - mu) dx), so
d x_hat = rstd * (dx - dmu) - x_hat * mean(dx * x_hat)). That is four passes over the activation.

`lean_batchnorm_jvp()` is a context in which `F.batch_norm` in training mode goes through this rule. It
does not update running statistics, so use it only where they would be discarded anyway (the look-ahead
passes run on cloned buffers). Eval-mode BatchNorm is left to torch. Checked against torch's own JVP in
float64 (tests/meta/test_batchnorm_jvp.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _shape(x: torch.Tensor) -> tuple[list[int], list[int]]:
    """Reduction dims (all but channels) and the broadcast shape of a per-channel vector."""
    dims = [0, *range(2, x.ndim)]
    return dims, [1, x.shape[1]] + [1] * (x.ndim - 2)


class _TrainBatchNorm(torch.autograd.Function):
    """y = gamma * (x - mean) * rstd + beta with batch statistics; forward-mode only."""

    @staticmethod
    def forward(x, weight, bias, eps):  # type: ignore[override]
        _, shape = _shape(x)
        # torch's own kernel for the batch statistics and x_hat (var_mean over N, H, W is far slower)
        x_hat, _, rstd = torch.native_batch_norm(x, None, None, None, None, True, 0.0, eps)
        rstd = rstd.view(shape)
        y = x_hat.clone() if weight is None else x_hat * weight.view(shape)  # y is never x_hat itself
        if bias is not None:
            y = y + bias.view(shape)
        return y, x_hat, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):  # type: ignore[override]
        _, weight, _, _ = inputs
        _, x_hat, rstd = output
        ctx.mark_non_differentiable(x_hat, rstd)
        ctx.save_for_forward(x_hat, rstd, weight)

    @staticmethod
    def jvp(ctx, dx, dweight, dbias, _deps):  # type: ignore[override]
        x_hat, rstd, weight = ctx.saved_tensors
        dims, shape = _shape(x_hat)
        a = rstd if weight is None else rstd * weight.view(shape)
        dy = torch.zeros_like(x_hat)
        shift = torch.zeros_like(a)
        scale_xhat = torch.zeros_like(a)
        if dx is not None:
            dmu = dx.mean(dim=dims, keepdim=True)
            c = (dx * x_hat).mean(dim=dims, keepdim=True)
            dy.addcmul_(dx, a)
            shift -= a * dmu
            scale_xhat -= a * c
        if dweight is not None:
            scale_xhat += dweight.view(shape)
        if dbias is not None:
            shift += dbias.view(shape)
        dy.addcmul_(x_hat, scale_xhat).add_(shift)
        return dy, None, None

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        raise RuntimeError("the lean BatchNorm rule is forward-mode only (used inside the jvp hypergradient)")


class lean_batchnorm_jvp(TorchFunctionMode):  # noqa: N801 - used as a context manager, like torch's modes
    """Within this context, training-mode `F.batch_norm` uses the lean forward-mode rule above."""

    def __torch_function__(self, func, types, args=(), kwargs=None) -> Any:
        kwargs = kwargs or {}
        if func is F.batch_norm:
            bound = _bind_batch_norm(*args, **kwargs)
            if bound["training"]:
                return _TrainBatchNorm.apply(bound["input"], bound["weight"], bound["bias"], bound["eps"])[0]
        return func(*args, **kwargs)


def _bind_batch_norm(
    input: torch.Tensor,  # noqa: A002 - F.batch_norm's own argument name
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> dict[str, Any]:
    return {"input": input, "weight": weight, "bias": bias, "training": training, "eps": eps}
