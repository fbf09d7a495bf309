"""Collectives that are correct under autograd, double backward and forward-mode AD.

The rule every loss and the CompMod meta step follow under data parallelism: each rank computes the
GLOBAL loss (the one a single process would compute on the whole global batch), using `gather` /
`all_reduce_sum` for every quantity that couples samples. The backward of these collectives SUMS the
incoming gradients over ranks, so rank r's gradient is the contribution of its own rows to
d(sum over ranks of the loss)/d(parameters) = world_size x (its share of the global gradient); DDP's
gradient average then gives exactly the single-process gradient. Gradients computed by hand with
`torch.autograd.grad` (which bypasses DDP's reducer) are averaged with `average_`.

Without an initialised process group every function here is the identity (single process), so the
library code is the same for one process and many.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    """True on the process that writes logs and checkpoints (rank 0, or the only process)."""
    return rank() == 0


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x. Backward: the sum over ranks of the gradients (each rank's copy of y is
    used by that rank's loss); tangent: the sum over ranks of the tangents. Both are again this
    function, so any order of differentiation works."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        y = x.detach().clone().contiguous()
        dist.all_reduce(y)
        return y

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(grad)

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(tangent)


class _Gather(torch.autograd.Function):
    """Concatenate every rank's (n, ...) tensor along dim 0, in rank order. Backward: the gradient
    summed over ranks, rows of this rank; tangent: the gathered tangents."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(world_size())]
        dist.all_gather(parts, x.detach().contiguous())
        return torch.cat(parts)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.rows = inputs[0].shape[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        start = rank() * ctx.rows
        return _AllReduceSum.apply(grad)[start : start + ctx.rows]

    @staticmethod
    def jvp(ctx, tangent: torch.Tensor) -> torch.Tensor:
        return _Gather.apply(tangent)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over ranks, differentiable (see the module docstring); `x` itself in one process."""
    return _AllReduceSum.apply(x) if world_size() > 1 else x


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of `x` (the same number on each rank: the Trainer splits the global batch evenly,
    `ddp.check_batch_split`, so no collective checks it on every call, which would wait for the device)
    concatenated in rank order: the global batch. Differentiable; `x` itself in one process."""
    if world_size() == 1:
        return x
    if x.ndim == 0:
        raise ValueError("gather needs a tensor with a batch dimension, got a scalar")
    return _Gather.apply(x)


def local_rows(n_global: int) -> slice:
    """The rows of a global batch of `n_global` that this rank holds (rank-major, equal shares)."""
    w = world_size()
    if n_global % w:
        raise ValueError(f"a global batch of {n_global} does not split into {w} equal shares")
    share = n_global // w
    return slice(rank() * share, (rank() + 1) * share)


@torch.no_grad()
def average_(tensors: Sequence[torch.Tensor]) -> None:
    """In place: each tensor becomes its mean over ranks (for gradients computed by hand)."""
    w = world_size()
    if w == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= w
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


@torch.no_grad()
def broadcast_(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """In place: every rank gets rank `src`'s values."""
    if world_size() == 1:
        return
    for t in tensors:
        dist.broadcast(t, src)
