"""BatchNorm with statistics over the global batch of all ranks, for any device and any order of AD.

torch.nn.SyncBatchNorm runs on CUDA only and has no forward-mode or double-backward rule, which CompMod's
meta step needs (the `jvp` mode pushes tangents through the network, the `exact` mode differentiates the
backward). This one is built from differentiable collectives (`compmod.distributed.all_reduce_sum`), so
autograd derives every rule. In one process, or in eval mode, it is exactly `nn.BatchNorm*d`.
`revert_sync_batchnorm` gives back plain BatchNorm for a copy that one rank trains alone.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from compmod.distributed import all_reduce_sum, world_size

B = TypeVar("B", bound=_BatchNorm)


class AnyRankBatchNorm(_BatchNorm):
    """Per-process BatchNorm over dim 1 of (N, C, ...) inputs of any rank (what `revert_sync_batchnorm` puts
    where it does not know which nn.BatchNorm*d a synchronised layer replaced)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"{type(self).__name__} expects (N, C, ...) input, got shape {tuple(x.shape)}")


class SyncBatchNorm(AnyRankBatchNorm):
    """BatchNorm over dim 1 of (N, C, ...) inputs whose batch statistics cover every rank's rows (mean and
    biased variance of the global batch, as BatchNorm in one process on it; running variance unbiased)."""

    plain_type: type[_BatchNorm] | None = None  # the nn.BatchNorm*d that `convert_sync_batchnorm` replaced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1] * world_size()
        mean = all_reduce_sum(x.sum(dims)) / n
        centred = x - mean.view(shape)
        var = all_reduce_sum(centred.pow(2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self._update_running_stats(mean.detach(), var.detach(), n)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        unbiased = var * (n / max(n - 1, 1))
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every nn.BatchNorm1d/2d/3d replaced by `SyncBatchNorm` (same parameters, buffers,
    device and dtype); returns the module (replaced in place below the root)."""
    if type(module) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        out = _copied(module, SyncBatchNorm)
        out.plain_type = type(module)
        return out
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child))
    return module


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every `SyncBatchNorm` and torch's nn.SyncBatchNorm replaced by per-process BatchNorm:
    the nn.BatchNorm*d that `convert_sync_batchnorm` replaced, else `AnyRankBatchNorm`; same parameters,
    buffers, requires_grad, mode, device and dtype. Returns the module (replaced in place below the root).

    For a copy that one rank runs in train mode (rank 0 fine-tunes after a `train.sync_bn` run): there a
    synchronised layer would wait in a collective for ranks that never join it.
    """
    if isinstance(module, (SyncBatchNorm, nn.SyncBatchNorm)):
        return _copied(module, getattr(module, "plain_type", None) or AnyRankBatchNorm)
    for name, child in module.named_children():
        module.add_module(name, revert_sync_batchnorm(child))
    return module


def _copied(bn: _BatchNorm, kind: type[B]) -> B:
    """A `kind` BatchNorm with the hyperparameters, parameters, buffers, requires_grad, mode, device and
    dtype of `bn`."""
    out = kind(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    ref = bn.weight if bn.affine else bn.running_mean
    if ref is not None:
        out.to(device=ref.device, dtype=ref.dtype)
    out.load_state_dict(bn.state_dict())
    if bn.affine:
        out.weight.requires_grad_(bn.weight.requires_grad)
        out.bias.requires_grad_(bn.bias.requires_grad)
    return out.train(bn.training)
