"""Random crops of images of their own sizes, batched: each sample's footprint is copied into a canvas.

A view's crop box (and rotation) is drawn for each image at its own size (`augment_params`). The part of
the image that the crop reads (its footprint: the bounding rectangle of the box as `affine_theta` turns
it, plus one pixel for the bilinear taps, clipped to the image) is copied into the top-left corner of a
zero canvas of the batch's largest footprint, the box is shifted into canvas coordinates and the
footprint's size becomes the sample's `extent`. `BatchAugment.apply` on the canvas then
gives exactly the crop of the whole image: inside the image every tap lands in the footprint, and taps
outside the image read 0 as before (`grid_sample`'s zero padding there, the canvas's zeros here).

The canvas stays small whatever the image's aspect: a crop of aspect at most a = max(ratio_hi, 1 /
ratio_lo) lies inside an image of shorter side s, so its footprint is at most about a * s on each side
(343 x 343 px for ImageNet's 3/4..4/3 at s = 256), while a panorama may be 1,000+ px wide.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from compmod.data.augment_params import AugmentParams
from compmod.data.datasets.store import VariableImages

MARGIN = 1  # pixels beyond the box's bounding rectangle (bilinear taps)


def footprints(p: AugmentParams, sizes: torch.Tensor) -> torch.Tensor:
    """(n, 4) int64 (y0, y1, x0, x1): the pixels of each image (sizes (n, 2) as h, w) its crop reads."""
    assert p.box is not None, "images of their own sizes always get a box"
    cx, cy, w, h = p.box.to(torch.float64).unbind(1)
    angle = torch.deg2rad(p.angle.to(torch.float64)) if p.angle is not None else torch.zeros_like(cx)
    # `affine_theta` rotates in the crop's normalised coordinates, then scales by w and h: a point at
    # (u, v) in [-1, 1]^2 lands at dx = w/2 (cos u - sin v), dy = h/2 (sin u + cos v) from the centre
    turn = angle.cos().abs() + angle.sin().abs()
    ex, ey = w * turn / 2, h * turn / 2
    height, width = sizes[:, 0], sizes[:, 1]
    y0 = (cy - ey).floor().long().sub(MARGIN).clamp(min=0)
    x0 = (cx - ex).floor().long().sub(MARGIN).clamp(min=0)
    y1 = torch.minimum((cy + ey).ceil().long().add(MARGIN), height)
    x1 = torch.minimum((cx + ex).ceil().long().add(MARGIN), width)
    return torch.stack([y0, torch.maximum(y1, y0 + 1), x0, torch.maximum(x1, x0 + 1)], dim=1)


def shifted(p: AugmentParams, regions: torch.Tensor) -> AugmentParams:
    """The parameters with each box moved into its footprint's canvas coordinates, and each footprint's
    size as the sample's `extent` (the unrotated grid is clamped to its outer pixel centres, as it is to
    the whole image's)."""
    assert p.box is not None
    shift = torch.stack([regions[:, 2], regions[:, 0]], dim=1).to(p.box.dtype)
    box = torch.cat([p.box[:, :2] - shift, p.box[:, 2:]], dim=1)
    extent = torch.stack([regions[:, 1] - regions[:, 0], regions[:, 3] - regions[:, 2]], dim=1)
    return dataclasses.replace(p, box=box, extent=extent)


def canvas_shape(regions: torch.Tensor, channels: int) -> tuple[int, int, int, int]:
    """(n, C, H, W) of the canvas holding every footprint (its largest height and width)."""
    h = int((regions[:, 1] - regions[:, 0]).max())
    w = int((regions[:, 3] - regions[:, 2]).max())
    return len(regions), channels, h, w


def gather(
    images: VariableImages, rows: Sequence[int], regions: torch.Tensor, buffer: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 canvas (n, C, H, W): image rows[i]'s footprint regions[i] at the top left of canvas[i], zeros
    around it. `buffer`: flat uint8 storage to build it in (e.g. pinned), at least the canvas's size."""
    shape = canvas_shape(regions, images.channels)
    if buffer is None:
        buffer = torch.empty(math.prod(shape), dtype=torch.uint8)
    canvas = buffer[: math.prod(shape)].view(shape)
    for i, (row, (y0, y1, x0, x1)) in enumerate(zip(rows, regions.tolist(), strict=True)):
        part = images.region(int(row), y0, y1, x0, x1)
        canvas[i, :, : y1 - y0, : x1 - x0].copy_(part)
        canvas[i, :, y1 - y0 :].zero_()
        canvas[i, :, : y1 - y0, x1 - x0 :].zero_()
    return canvas
