"""Getting a uint8 batch of the in-memory dataset onto the training device.

- CPU: index the dataset tensor.
- CUDA, dataset small enough (<= `RESIDENT_MAX_FRACTION` of free GPU memory): copy it to the GPU once and
  index there (Fashion-MNIST is 47 MB, CIFAR-10 150 MB): no host-to-device copy per step.
- CUDA, larger: gather into one of two pinned host buffers and copy with `non_blocking=True`, so the copy
  overlaps the previous step's compute; a buffer is reused only after its last copy has finished.
"""

from __future__ import annotations

import torch

RESIDENT_MAX_FRACTION = 0.25


class BatchSource:
    def __init__(self, images: torch.Tensor, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.images = images
        self.mode = "cpu"
        self._pinned: list[torch.Tensor] = []
        self._events: list[torch.cuda.Event | None] = []
        self._slot = 0
        if self.device.type != "cuda":
            return
        free, _ = torch.cuda.mem_get_info(self.device)
        nbytes = images.numel() * images.element_size()
        if nbytes <= RESIDENT_MAX_FRACTION * free:
            self.images, self.mode = images.to(self.device), "resident"
        else:
            self.mode = "pinned"

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """The images at `idx` on the device, uint8 (N, C, H, W)."""
        if self.mode == "cpu":
            return self.images[idx]
        if self.mode == "resident":
            return self.images[idx.to(self.device, non_blocking=True)]
        return self._pinned_copy(idx)

    def _pinned_copy(self, idx: torch.Tensor) -> torch.Tensor:
        shape = (len(idx), *self.images.shape[1:])
        if not self._pinned or self._pinned[0].shape != shape:
            self._pinned = [torch.empty(shape, dtype=self.images.dtype).pin_memory() for _ in range(2)]
            self._events = [None, None]
        slot, self._slot = self._slot, 1 - self._slot
        event = self._events[slot]
        if event is not None:
            event.synchronize()  # that buffer's previous copy must be done before it is overwritten
        torch.index_select(self.images, 0, idx, out=self._pinned[slot])
        out = self._pinned[slot].to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._events[slot] = event
        return out
