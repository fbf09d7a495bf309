"""Resizing, channel conversion and statistics of uint8 image tensors, in chunks to bound memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK_ELEMENTS = 1 << 24  # ~64 MB of float32 per chunk
# ITU-R 601-2 luma in 16-bit fixed point, bit-identical to PIL's convert("L").
_LUMA = (19595, 38470, 7471)
STATS_MAX_IMAGES = 10_000


def _chunk_size(images: torch.Tensor, out_hw: int) -> int:
    c, h, w = images.shape[1:]
    return max(1, _CHUNK_ELEMENTS // (c * max(h * w, out_hw)))


def resize_images(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Resize to size x size with antialiased bilinear interpolation.

    Args:
        images: uint8 (N, C, H, W).
        size: output side; None (or the current square size) returns `images` unchanged.

    Returns:
        uint8 (N, C, size, size), contiguous.
    """
    n, c, h, w = images.shape
    if size is None or (h == size and w == size):
        return images.contiguous()
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    step = _chunk_size(images, size * size)
    for i in range(0, n, step):
        chunk = images[i : i + step].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i : i + step] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def convert_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Convert between grey and colour: 3 -> 1 by ITU-R 601 luma, 1 -> 3 by repetition.

    Args:
        images: uint8 (N, C, H, W) with C in {1, 3}.
        channels: 1, 3, or None to keep C.

    Returns:
        uint8 (N, channels, H, W), contiguous.
    """
    c = images.shape[1]
    if channels is None or channels == c:
        return images.contiguous()
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        out = torch.empty((images.shape[0], 1, *images.shape[2:]), dtype=torch.uint8)
        step = _chunk_size(images, 0)
        for i in range(0, images.shape[0], step):
            rgb = images[i : i + step].to(torch.int32)
            luma = rgb[:, 0] * _LUMA[0] + rgb[:, 1] * _LUMA[1] + rgb[:, 2] * _LUMA[2] + 32768
            out[i : i + step, 0] = (luma >> 16).to(torch.uint8)
        return out
    raise ValueError(f"cannot convert {c} channels to {channels}")


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``images / 255`` over up to 10k evenly spaced images.

    Args:
        images: uint8 (N, C, H, W).

    Returns:
        (mean, std), each C floats; std is floored at 1/255 so that normalising never divides by 0.
    """
    n, c = images.shape[:2]
    if n == 0:
        return (0.0,) * c, (1.0,) * c
    idx = torch.linspace(0, n - 1, min(n, STATS_MAX_IMAGES)).round().long().unique()
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    step = _chunk_size(images, 0)
    for i in range(0, len(idx), step):
        x = images[idx[i : i + step]].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square_().sum(dim=(0, 2, 3))
    count = len(idx) * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_(min=0).sqrt_().clamp_(min=1 / 255)
    return tuple(mean.tolist()), tuple(std.tolist())
