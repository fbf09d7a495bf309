"""Random parameters of `BatchAugment`: view checks, the `ops` rule, and per-sample draws on the CPU.

Every draw uses the caller's CPU `torch.Generator`, in a fixed order, so one seed gives one batch of views
on any device. Crop boxes follow torchvision's `RandomResizedCrop.get_params` (10 tries of (area scale, log
aspect ratio), else a centre crop), vectorised as 10 candidates per sample of which the first valid one
wins; boxes stay continuous (torchvision rounds them to whole pixels).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from compmod.config.augment import AUGMENT_OPS, ViewAugment
from compmod.data import augment_ops as ops_
from compmod.errors import ConfigError, did_you_mean

CROP_TRIES = 10  # as torchvision's RandomResizedCrop
CUTOUT_RATIO = (0.3, 3.3)  # aspect range of torchvision's RandomErasing
# Probability an op gets when `ops` lists it but the view has it off (probability 0 / crop false).
OP_DEFAULT_PROB = {
    "flip": 0.5,
    "jitter": 0.8,
    "grayscale": 0.2,
    "blur": 0.5,
    "rotation": 0.5,
    "cutout": 0.5,
    "solarize": 0.2,
}
_PROB_FIELD = {op: f"{op}_prob" for op in OP_DEFAULT_PROB}


def restrict_ops(view: ViewAugment, ops: Sequence[str] | None) -> ViewAugment:
    """The view with only `ops` on (Table 4 of the paper switches op sets this way).

    Ops not listed are turned off (probability 0, crop false). A listed op that the view has off is turned
    on: crop -> true, others -> OP_DEFAULT_PROB (flip 0.5, jitter 0.8, grayscale 0.2, blur 0.5,
    rotation 0.5, cutout 0.5, solarize 0.2); a listed op already on keeps the view's probability.
    `ops=None` returns the view unchanged. Unknown op -> ConfigError.
    """
    if ops is None:
        return view
    for op in ops:
        if op not in AUGMENT_OPS:
            raise ConfigError(
                f"unknown augment op {op!r}{did_you_mean(op, AUGMENT_OPS)}; "
                f"choose from: {', '.join(AUGMENT_OPS)}"
            )
    changes: dict[str, object] = {"crop": "crop" in ops}
    for op, name in _PROB_FIELD.items():
        prob = getattr(view, name)
        changes[name] = (prob if prob > 0 else OP_DEFAULT_PROB[op]) if op in ops else 0.0
    return dataclasses.replace(view, **changes)


def validate_view(view: ViewAugment, where: str = "augment view") -> None:
    """Range checks on a view's values; ConfigError naming the first bad field and what is accepted."""

    def interval(v: tuple[float, float], lo: float, hi: float) -> bool:
        return len(v) == 2 and lo <= v[0] <= v[1] <= hi

    checks = [(_PROB_FIELD[op], "a probability in [0, 1]", lambda p: 0.0 <= p <= 1.0) for op in _PROB_FIELD]
    checks += [
        ("crop_scale", "a range [lo, hi] with 0 < lo <= hi <= 1", lambda v: interval(v, 1e-9, 1.0)),
        ("crop_ratio", "a range [lo, hi] with 0 < lo <= hi", lambda v: interval(v, 1e-9, math.inf)),
        ("brightness", "a number >= 0", lambda v: v >= 0),
        ("contrast", "a number >= 0", lambda v: v >= 0),
        ("saturation", "a number >= 0", lambda v: v >= 0),
        ("hue", "a number in [0, 0.5]", lambda v: 0 <= v <= 0.5),
        ("blur_sigma", "a range [lo, hi] with 0 < lo <= hi", lambda v: interval(v, 1e-9, math.inf)),
        ("rotation_degrees", "a number in [0, 180]", lambda v: 0 <= v <= 180),
        ("cutout_scale", "a range [lo, hi] with 0 < lo <= hi <= 1", lambda v: interval(v, 1e-9, 1.0)),
        ("solarize_threshold", "a number in [0, 1]", lambda v: 0 <= v <= 1),
    ]
    for name, accepted, ok in checks:
        value = getattr(view, name)
        if not ok(value):
            raise ConfigError(f"{where}.{name}: {value!r} is not accepted; expected {accepted}")


@dataclass
class AugmentParams:
    """Random parameters of one batch, CPU tensors with N rows; None = that op is off for the whole batch."""

    box: torch.Tensor | None = None  # (N, 4) crop (cx, cy, w, h) in source pixels
    flip: torch.Tensor | None = None  # (N,) bool
    angle: torch.Tensor | None = None  # (N,) degrees counter-clockwise, 0 where not rotated
    jitter: torch.Tensor | None = None  # (N,) bool
    factors: torch.Tensor | None = None  # (N, 4) brightness, contrast, saturation factors and hue shift
    order: tuple[int, ...] = (0, 1, 2, 3)  # order of the four jitter ops in this batch
    gray: torch.Tensor | None = None  # (N,) bool
    blur: torch.Tensor | None = None  # (N,) bool
    sigma: torch.Tensor | None = None  # (N,) blur sigma
    solarize: torch.Tensor | None = None  # (N,) bool
    cutout: torch.Tensor | None = None  # (N,) bool
    cutout_box: torch.Tensor | None = None  # (N, 4) long (top, left, height, width) in output pixels
    # (N, 2) (h, w) of each sample's image inside a larger, zero-padded input (a canvas of crop footprints,
    # `data.regions`); None: every sample fills the input
    extent: torch.Tensor | None = None

    def rows(self, index: slice) -> AugmentParams:
        """The parameters of rows `index` only (a data-parallel rank's share of a global batch)."""
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name)[index]
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)
            },
        )


def sample_crop_boxes(
    n: int,
    height: int | torch.Tensor,
    width: int | torch.Tensor,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(n, 4) boxes (cx, cy, w, h) as torchvision's RandomResizedCrop.get_params, vectorised over samples.

    `height`, `width`: the source size, one for all or an (n,) tensor (images of their own sizes)."""
    height = torch.as_tensor(height, dtype=torch.float32).expand(n)
    width = torch.as_tensor(width, dtype=torch.float32).expand(n)
    area = (height * width)[:, None]
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, CROP_TRIES, generator=generator)
    r = ops_.log_uniform(ratio[0], ratio[1], (n, CROP_TRIES), generator)
    w, h = torch.sqrt(area * s * r), torch.sqrt(area * s / r)
    valid = (w <= width[:, None]) & (h <= height[:, None])
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid try (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    in_ratio = width / height  # centre-crop fallback when no try is valid
    narrow, wide = in_ratio < ratio[0], in_ratio > ratio[1]
    fw = torch.where(wide, height * ratio[1], width)
    fh = torch.where(narrow, width / ratio[0], height)
    ok = valid.any(dim=1)
    w, h = torch.where(ok, w, fw), torch.where(ok, h, fh)
    pos = torch.rand(n, 2, generator=generator)
    cx = torch.where(ok, w / 2 + pos[:, 0] * (width - w), width / 2)
    cy = torch.where(ok, h / 2 + pos[:, 1] * (height - h), height / 2)
    return torch.stack([cx, cy, w, h], dim=1)


def full_boxes(height: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """(n, 4) boxes (cx, cy, w, h) covering each whole image (crop off, images of their own sizes)."""
    h, w = height.to(torch.float32), width.to(torch.float32)
    return torch.stack([w / 2, h / 2, w, h], dim=1)


def _mask(p: float, n: int, generator: torch.Generator | None) -> torch.Tensor | None:
    return torch.rand(n, generator=generator) < p if p > 0 else None


def _uniform(lo: float, hi: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def sample_cutout_boxes(
    n: int, size: int, scale: Sequence[float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """(n, 4) long (top, left, height, width) rectangles inside a size x size image: area fraction
    ~ U(scale), aspect log-uniform in CUTOUT_RATIO (clipped to the image rather than re-tried)."""
    area = _uniform(scale[0], scale[1], n, generator) * size * size
    r = ops_.log_uniform(CUTOUT_RATIO[0], CUTOUT_RATIO[1], (n,), generator)
    h = torch.sqrt(area * r).round().clamp(1, size)
    w = torch.sqrt(area / r).round().clamp(1, size)
    u = torch.rand(n, 2, generator=generator)
    top, left = torch.floor(u[:, 0] * (size - h + 1)), torch.floor(u[:, 1] * (size - w + 1))
    return torch.stack([top, left, h, w], dim=1).long()


def sample_params(
    view: ViewAugment,
    n: int,
    height: int | torch.Tensor,
    width: int | torch.Tensor,
    size: int,
    generator: torch.Generator | None = None,
) -> AugmentParams:
    """Draw one batch's parameters for `view` (source images height x width, output size x size; (n,)
    tensors for images of their own sizes, which always get a box, the whole image when crop is off)."""
    g, v, p = generator, view, AugmentParams()
    if v.crop:
        p.box = sample_crop_boxes(n, height, width, v.crop_scale, v.crop_ratio, g)
    elif isinstance(height, torch.Tensor):
        p.box = full_boxes(height, torch.as_tensor(width))
    p.flip = _mask(v.flip_prob, n, g)
    rotate = _mask(v.rotation_prob, n, g)
    if rotate is not None:
        p.angle = _uniform(-v.rotation_degrees, v.rotation_degrees, n, g) * rotate
    p.jitter = _mask(v.jitter_prob, n, g)
    if p.jitter is not None:
        b, c, s, h = v.brightness, v.contrast, v.saturation, v.hue
        ranges = [(max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-h, h)]
        p.factors = torch.stack([_uniform(lo, hi, n, g) for lo, hi in ranges], dim=1)
        p.order = tuple(torch.randperm(4, generator=g).tolist())
    p.gray = _mask(v.grayscale_prob, n, g)
    p.blur = _mask(v.blur_prob, n, g)
    if p.blur is not None:
        p.sigma = _uniform(v.blur_sigma[0], v.blur_sigma[1], n, g)
    p.solarize = _mask(v.solarize_prob, n, g)
    p.cutout = _mask(v.cutout_prob, n, g)
    if p.cutout is not None:
        p.cutout_box = sample_cutout_boxes(n, size, v.cutout_scale, g)
    return p
