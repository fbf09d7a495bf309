"""The two augmented views of every training batch, on the training device.

Every rank draws the augmentation parameters of the whole global batch, then takes its rows
(`distributed.local_rows`), so with `train.sync_bn` a data-parallel run equals one process on the global
batch. The parameters of batch i of epoch e come from a generator seeded by (train.seed, e, i) alone
(`batch_generator`): a batch can be drawn ahead of its step, and a resumed run draws exactly what an
uninterrupted one would, with no generator state in the checkpoint.

- `TensorFeed`: fixed-size images held as one uint8 tensor (`BatchSource`: on the CPU, resident on the
  GPU, or through pinned buffers), augmented on the device.
- `StoreFeed`: a prepared store's images at their own sizes (`data.datasets.store`). A background thread
  works one batch ahead: it draws the batch's parameters and copies each sample's crop footprint
  (`data.regions`) from the memory-mapped store into a (pinned, on CUDA) canvas; the training thread then
  copies the canvas to the device (non-blocking) and augments it there. The thread's copies run in torch
  kernels, which release the GIL, so reading overlaps the step.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Iterator, Sequence

import torch

from compmod.data.augment import AugmentParams, BatchAugment
from compmod.data.datasets import ImageDataset
from compmod.data.datasets.store import VariableImages
from compmod.data.regions import footprints, gather, shifted
from compmod.engine.batches import BatchSource

Views = tuple[torch.Tensor, torch.Tensor]
Canvas = tuple[torch.Tensor, AugmentParams]  # uint8 footprints of one view, and its shifted parameters


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The CPU generator of batch `batch` of epoch `epoch` (see the module docstring). Torch's CPU
    generator keeps only 32 bits of its seed, so (seed, epoch, batch) is hashed to 32 bits: every part
    reaches the stream (packing them into one 64-bit integer lost train.seed)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{batch}".encode(), digest_size=4).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


def build_feed(
    data: ImageDataset, views: Sequence[BatchAugment], local: slice, device: torch.device, seed: int
) -> TensorFeed | StoreFeed:
    """The feed of `data`: its stored images at their own sizes when it has them, else its tensor."""
    if data.variable is not None:
        return StoreFeed(data.variable, views, local, device, seed)
    return TensorFeed(data.images, views, local, device, seed)


class TensorFeed:
    def __init__(
        self,
        images: torch.Tensor,
        views: Sequence[BatchAugment],
        local: slice,
        device: torch.device,
        seed: int,
    ) -> None:
        self.source = BatchSource(images, device)
        self.views, self.local, self.seed = list(views), local, seed
        self.height, self.width = images.shape[-2:]
        self.waited_s = 0.0  # nothing is read ahead, so nothing is waited for

    def epoch(self, order: torch.Tensor, epoch: int, batches: range, batch_size: int) -> Iterator[Views]:
        for i in batches:
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = self.source.get(idx[self.local])
            g = batch_generator(self.seed, epoch, i)
            params = [v.sample(len(idx), self.height, self.width, g).rows(self.local) for v in self.views]
            yield self.views[0].apply(x, params[0]), self.views[1].apply(x, params[1])


class StoreFeed:
    DEPTH = 2  # batches prepared ahead of the step (one queued, one being gathered)

    def __init__(
        self,
        images: VariableImages,
        views: Sequence[BatchAugment],
        local: slice,
        device: torch.device,
        seed: int,
    ) -> None:
        self.images, self.views, self.local, self.seed = images, list(views), local, seed
        self.device = device
        self.pin = device.type == "cuda"
        # canvases in rotation: one being gathered, DEPTH queued or in use, one being copied to the device
        self._buffers: list[list[torch.Tensor]] = [[] for _ in range(self.DEPTH + 2)]
        self._copied: list[torch.cuda.Event | None] = [None] * (self.DEPTH + 2)
        self.waited_s = 0.0  # the training thread's time waiting for the reading thread, this epoch

    def _gather(self, slot: int, idx: torch.Tensor, epoch: int, i: int) -> list[Canvas]:
        """Both views of batch i: this rank's canvases (in buffer slot `slot`) and shifted parameters."""
        sizes = self.images.sizes[idx]
        g = batch_generator(self.seed, epoch, i)
        event = self._copied[slot]
        if event is not None:
            event.synchronize()  # the slot's previous canvases have reached the device
        out = []
        for k, view in enumerate(self.views):
            p = view.sample(len(idx), sizes[:, 0], sizes[:, 1], g).rows(self.local)
            rows = idx[self.local].tolist()
            regions = footprints(p, sizes[self.local])
            need = int(((regions[:, 1] - regions[:, 0]).max() * (regions[:, 3] - regions[:, 2]).max()).item())
            need *= len(rows) * self.images.channels
            buffers = self._buffers[slot]
            if len(buffers) <= k or buffers[k].numel() < need:
                buffer = torch.empty(need, dtype=torch.uint8)
                buffer = buffer.pin_memory() if self.pin else buffer
                buffers[k : k + 1] = [buffer]
            out.append((gather(self.images, rows, regions, buffers[k]), shifted(p, regions)))
        return out

    def epoch(self, order: torch.Tensor, epoch: int, batches: range, batch_size: int) -> Iterator[Views]:
        ready: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        stop = threading.Event()

        def put(item: tuple) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for n, i in enumerate(batches):
                    slot = n % len(self._buffers)
                    idx = order[i * batch_size : (i + 1) * batch_size]
                    if not put((slot, self._gather(slot, idx, epoch, i))):
                        return
            except BaseException as e:  # raised again in the training thread
                put((None, e))

        thread = threading.Thread(target=work, name="compmod-store-feed", daemon=True)
        thread.start()
        self.waited_s = 0.0
        try:
            for _ in batches:
                t0 = time.perf_counter()
                slot, item = ready.get()
                self.waited_s += time.perf_counter() - t0
                if slot is None:
                    raise item
                views = []
                for (canvas, params), view in zip(item, self.views, strict=True):
                    x = canvas.to(self.device, non_blocking=True)
                    views.append(view.apply(x, params))
                if self.pin:
                    event = torch.cuda.Event()
                    event.record()
                    self._copied[slot] = event
                yield views[0], views[1]
        finally:
            stop.set()
            thread.join()
