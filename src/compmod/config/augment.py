"""Typed augmentation settings: one `ViewAugment` per view, plus the set of enabled ops.

Defaults follow SimCLR's CIFAR recipe (Chen et al. 2020, Appendix B.9); method presets in
`compmod.config.augment_presets` override them (BYOL's asymmetric blur and solarisation, Grill et al.
2020, Table 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

AUGMENT_OPS = ("crop", "flip", "jitter", "grayscale", "blur", "rotation", "cutout", "solarize")


@dataclass
class ViewAugment:
    """Parameters of one view's random transform. Probabilities are per sample."""

    crop: bool = True  # random resized crop (area scale, aspect ratio), then resize to image_size
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5  # horizontal flip
    jitter_prob: float = 0.8  # colour jitter; brightness/contrast also act on 1 channel
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4  # no-op on 1 channel
    hue: float = 0.1  # no-op on 1 channel
    grayscale_prob: float = 0.2  # no-op on 1 channel
    blur_prob: float = 0.0  # Gaussian blur, kernel ~10% of image size
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    rotation_prob: float = 0.0  # rotation by an angle uniform in [-degrees, degrees]
    rotation_degrees: float = 30.0
    cutout_prob: float = 0.0  # erase one rectangle (area fraction in cutout_scale)
    cutout_scale: tuple[float, float] = (0.02, 0.25)
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5


@dataclass
class AugmentConfig:
    """`preset: auto` takes the method's preset; `ops`, when set, keeps only the listed ops on."""

    preset: str = "auto"
    ops: list[str] | None = None
    view1: ViewAugment = field(default_factory=ViewAugment)
    view2: ViewAugment = field(default_factory=ViewAugment)
