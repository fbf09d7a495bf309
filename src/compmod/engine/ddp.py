"""Data-parallel training under torchrun: process group set-up, the DDP wrapper, teardown.

`torchrun --nproc_per_node N -m compmod train ...` starts N processes with RANK / WORLD_SIZE /
LOCAL_RANK set; `init_distributed` joins them (gloo on CPU, nccl on CUDA, one GPU per process). Without
those variables (or with WORLD_SIZE=1) nothing is initialised and training is the single-process code.
What makes the result equal to one process on the global batch is elsewhere: `compmod.distributed`
(losses on the global batch), the Trainer (each rank takes its equal share of every global batch and of
its augmentation parameters), `train.sync_bn` (`models/sync_batchnorm.py`) and the meta step's averaging.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from compmod.distributed import is_initialized, world_size
from compmod.errors import ConfigError


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun process group (once) and return this process's device: `cuda:LOCAL_RANK` when
    `device` is CUDA, else `device`."""
    if not launched_by_torchrun():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} visible; start at most "
                "that many processes per node, or set train.device=cpu"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return device


def check_batch_split(batch_size: int) -> None:
    w = world_size()
    if batch_size % w:
        raise ConfigError(
            f"config key train.batch_size: {batch_size} does not split into {w} equal shares; it is the "
            f"global batch, so use a multiple of the {w} processes"
        )


def wrap(method: nn.Module, device: torch.device) -> nn.Module:
    """DDP around `method` when distributed, else `method`. Buffers are synced once at the start, not at
    every step (a MoCo queue would be sent each time); with `train.sync_bn` every rank's statistics agree
    anyway. DDP looks for parameters without gradient only for methods that declare some
    (`SSLMethod.unused_parameters`)."""
    if world_size() == 1:
        return method
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        method,
        device_ids=[device.index] if device.type == "cuda" else None,
        forward_sync_buffers=False,
        find_unused_parameters=bool(getattr(method, "unused_parameters", False)),
    )


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is True on some rank (so all ranks stop at the same step)."""
    if world_size() == 1:
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()
