"""`compmod plan`: what a run will cost before it starts: steps, data size, and per-device peak memory.

Memory is measured, not modelled: real training steps (the config's method, CompMod and meta mode,
optimiser, precision and channels_last, random images of the preset's size) on the current device, first
one at batch 2 so that gradients and optimiser state exist, then two at each of two small per-device
batches b0 < b1 (the first of each pair warms the kernels' caches for that shape; the second is measured).
A step's peak is the most memory its tensors hold above what was live before it: on CUDA
`torch.cuda.max_memory_allocated` (absolute, model included), on CPU the running sum of the allocations
and frees the torch profiler records (`profile_memory=True`), in time order, least of three replays.
Activations grow linearly with the batch: s = (peak(b1) - peak(b0)) / (b1 - b0) per image, and at the
run's per-device batch B = `train.batch_size / gpus` the prediction is peak(b1) + s (B - b1), plus on CPU
the parameters, gradients and optimiser state.
A CUDA run adds its context (~0.5 GiB) and cuDNN workspaces on top.
"""

from __future__ import annotations

import gc
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from compmod.config.schema import Config
from compmod.data.datasets.base import dataset_search_paths
from compmod.data.datasets.imagenet import PREPARED_DATASETS
from compmod.data.datasets.store import default_side, store_gib
from compmod.engine.builders import build_train_step
from compmod.errors import ConfigError

# Images in the split each dataset pretrains on, channels and the size `data.image_size: null` loads them
# at (standard sizes of the releases; STL-10: train + unlabeled; ImageNet-100: the CMC class list of
# ImageNet's train split; ImageNet-style folders are resized to 224 px unless data.image_size says).
PRETRAIN_IMAGES = {
    "cifar10": (50_000, 3, 32),
    "cifar100": (50_000, 3, 32),
    "stl10": (105_000, 3, 96),
    "tiny_imagenet": (100_000, 3, 64),
    "imagenet": (1_281_167, 3, 224),
    "imagenet100": (126_689, 3, 224),
    "fashion_mnist": (60_000, 1, 28),
}
GiB = 2**30


@dataclass
class Plan:
    images: int
    channels: int
    image_size: int
    steps_per_epoch: int
    steps: int
    data_on_disk: tuple[Path, int] | None  # (folder, bytes) when the data was found
    cache_bytes: int  # decoded uint8: the images at data.image_size, or a prepared store (train images at
    # shorter side data.store_side and mean ImageNet aspect 4:3, plus their evaluation views)
    device: str
    batches: tuple[int, int]
    peaks: tuple[int, int]  # the step's peak at `batches` (see the module docstring)
    per_image: float  # activation bytes per image of the per-device batch
    model_bytes: int  # parameters + gradients + optimiser state
    per_device_batch: int
    predicted: int  # bytes at per_device_batch

    def lines(self, gpus: int, gpu_memory: float | None) -> list[str]:
        fit = ""
        if gpu_memory is not None:
            ok = self.predicted <= gpu_memory * GiB
            fit = f": {'fits' if ok else 'does NOT fit'} in {gpu_memory:g} GiB per device"
        disk = (
            f"{self.data_on_disk[1] / GiB:.2f} GiB on disk in {self.data_on_disk[0]}"
            if self.data_on_disk
            else "not found here"
        )
        store = f"{self.cache_bytes / GiB:.2f} GiB of uint8 ({self.channels} channels)"
        return [
            f"data: {self.images:,} images ({disk}); decoded store {store}",
            f"schedule: {self.steps_per_epoch:,} steps per epoch, {self.steps:,} steps",
            f"measured on {self.device} at per-device batch {self.batches[0]} and {self.batches[1]}: "
            f"{self.per_image / 2**20:.1f} MiB of activations per image, "
            f"{self.model_bytes / GiB:.3f} GiB of parameters, gradients and optimiser state",
            f"per device ({gpus} device(s), batch {self.per_device_batch}): "
            f"{self.predicted / GiB:.2f} GiB predicted peak{fit}",
        ]


def make_plan(cfg: Config, gpus: int = 1, batches: tuple[int, int] = (8, 16)) -> Plan:
    """Measure and extrapolate (see the module docstring). `gpus` divides `train.batch_size`."""
    if gpus < 1 or cfg.train.batch_size % gpus:
        batch = cfg.train.batch_size
        raise ConfigError(f"--gpus {gpus} is not accepted; expected a divisor of batch_size {batch}")
    name = cfg.data.name
    if name not in PRETRAIN_IMAGES:
        known = ", ".join(PRETRAIN_IMAGES)
        raise ConfigError(
            f"data.name {name!r} is not accepted by compmod plan; it knows the sizes of {known}"
        )
    images, channels, native = PRETRAIN_IMAGES[name]
    channels = cfg.data.channels or channels
    size = cfg.data.image_size or native
    per_epoch = images // cfg.train.batch_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model_bytes, peaks = _measure(cfg, channels, size, device, batches)
    per_image = max(0.0, (peaks[1] - peaks[0]) / (batches[1] - batches[0]))
    per_device = cfg.train.batch_size // gpus
    return Plan(
        images=images,
        channels=channels,
        image_size=size,
        steps_per_epoch=per_epoch,
        steps=per_epoch * cfg.train.epochs,
        data_on_disk=_on_disk(name, cfg.data.root),
        cache_bytes=_decoded_bytes(cfg, images, channels, size),
        device=str(device),
        batches=batches,
        peaks=peaks,
        per_image=per_image,
        model_bytes=model_bytes,
        per_device_batch=per_device,
        predicted=(model_bytes if device.type == "cpu" else 0)
        + peaks[1]
        + round(per_image * (per_device - batches[1])),
    )


def _measure(
    cfg: Config, channels: int, size: int, device: torch.device, batches: tuple[int, int]
) -> tuple[int, tuple[int, int]]:
    """(parameters + gradients + optimiser state in bytes, the step's peak at each of `batches`)."""
    torch.manual_seed(0)
    step = build_train_step(cfg, channels, size, device, steps_per_epoch=1000)
    method = step.method

    def run(b: int) -> None:
        x = [step.prepare(torch.rand(b, channels, size, size, device=device)) for _ in range(2)]
        step.step(x[0], x[1], lr=cfg.train.lr)

    run(2)  # gradients and optimiser state exist from here on
    model_bytes = sum(t.numel() * t.element_size() for t in _state_tensors(step.optimizer, method))
    peaks = []
    for b in batches:
        run(b)  # kernels and caches for this shape
        peaks.append(_step_peak(device, lambda b=b: run(b)))
    return model_bytes, (peaks[0], peaks[1])


def _state_tensors(optimizer: torch.optim.Optimizer, method: torch.nn.Module) -> list[torch.Tensor]:
    params = [p for p in method.parameters()]
    grads = [p.grad for p in params if p.grad is not None]
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return [*params, *grads, *state]


def _step_peak(device: torch.device, run: Callable[[], None], repeats: int = 3) -> int:
    """The peak bytes `run` holds: allocated on CUDA (absolute), above what was live before it on CPU.

    On CPU the profiler's allocation records are replayed in time order. It drops the frees of blocks
    allocated before it started and, now and then, of a block freed outside the profiled thread, so one
    replay can only overstate the peak: the least of `repeats` replays (gc collected first) is kept.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run()
        return torch.cuda.max_memory_allocated(device)
    peaks = []
    for _ in range(repeats):
        gc.collect()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
        events = prof.profiler.kineto_results.events()
        records = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
        peaks.append(max(itertools.accumulate((n for _, n in records), initial=0)))
    return min(peaks)


def _decoded_bytes(cfg: Config, images: int, channels: int, size: int) -> int:
    """Bytes of the decoded data: the images at `size`, or a prepared store (`store` module)."""
    views = images * channels * size * size
    if cfg.data.name not in PREPARED_DATASETS:
        return views
    side = cfg.data.store_side or default_side(size)
    return round(store_gib(images, side, channels) * GiB) + views


def _on_disk(name: str, root: str | None) -> tuple[Path, int] | None:
    for folder in dataset_search_paths(name, root):
        if folder.is_dir() and any(folder.iterdir()):
            total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
            return folder, total
    return None
