"""Augmentation presets per method: nested overrides for `AugmentConfig`, merged UNDER the user's config.

Each preset spells out every field of both views, so a preset does not silently change when the
`ViewAugment` defaults do. Paper defaults are kept even where they are harsh for tiny images (crop scale
(0.08, 1) on 28x28 Fashion-MNIST); a run's config can override them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from compmod.registry import Registry

PRESETS: Registry[Callable[[], dict[str, Any]]] = Registry("augment preset")

# SimCLR's CIFAR-10 recipe (Chen et al. 2020, Appendix B.9): random resized crop (0.08, 1) with aspect
# (3/4, 4/3), flip 0.5, colour jitter with strength s = 0.5 -> (0.8s, 0.8s, 0.8s, 0.2s) = (0.4, 0.4, 0.4, 0.1)
# applied with p = 0.8, greyscale p = 0.2, and no Gaussian blur for small images.
_SIMCLR_VIEW: dict[str, Any] = {
    "crop": True,
    "crop_scale": (0.08, 1.0),
    "crop_ratio": (3 / 4, 4 / 3),
    "flip_prob": 0.5,
    "jitter_prob": 0.8,
    "brightness": 0.4,
    "contrast": 0.4,
    "saturation": 0.4,
    "hue": 0.1,
    "grayscale_prob": 0.2,
    "blur_prob": 0.0,
    "blur_sigma": (0.1, 2.0),
    "rotation_prob": 0.0,
    "rotation_degrees": 30.0,
    "cutout_prob": 0.0,
    "cutout_scale": (0.02, 0.25),
    "solarize_prob": 0.0,
    "solarize_threshold": 0.5,
}

# BYOL (Grill et al. 2020, Table 6): crop (0.08, 1), flip 0.5, jitter p = 0.8 with brightness 0.4,
# contrast 0.4, saturation 0.2, hue 0.1, greyscale 0.2; Gaussian blur (sigma in [0.1, 2]) p = 1.0 / 0.1 and
# solarisation p = 0.0 / 0.2 for the first / second view.
_BYOL_VIEW = {**_SIMCLR_VIEW, "saturation": 0.2}
_BYOL = {
    "view1": {**_BYOL_VIEW, "blur_prob": 1.0, "solarize_prob": 0.0},
    "view2": {**_BYOL_VIEW, "blur_prob": 0.1, "solarize_prob": 0.2},
}


@PRESETS.register("simclr")
def _simclr() -> dict[str, Any]:
    """Both views equal (SimCLR, Chen et al. 2020, CIFAR recipe)."""
    return {"view1": dict(_SIMCLR_VIEW), "view2": dict(_SIMCLR_VIEW)}


@PRESETS.register("default")
def _default() -> dict[str, Any]:
    """SimCLR-like, for methods without a recipe of their own."""
    return _simclr()


@PRESETS.register("byol")
def _byol() -> dict[str, Any]:
    """Asymmetric views (BYOL, Grill et al. 2020, Table 6)."""
    return copy.deepcopy(_BYOL)


@PRESETS.register("barlow_twins")
def _barlow_twins() -> dict[str, Any]:
    """BYOL's asymmetric views (Barlow Twins, Zbontar et al. 2021, Appendix: blur 1.0 / 0.1, solarise
    0.0 / 0.2, jitter (0.4, 0.4, 0.2, 0.1) with p = 0.8, greyscale 0.2)."""
    return copy.deepcopy(_BYOL)


@PRESETS.register("none")
def _none() -> dict[str, Any]:
    """Identity views: crop off and every probability 0 (strengths stay, so `ops` can turn ops back on)."""
    off = {
        **_SIMCLR_VIEW,
        "crop": False,
        "flip_prob": 0.0,
        "jitter_prob": 0.0,
        "grayscale_prob": 0.0,
        "blur_prob": 0.0,
        "rotation_prob": 0.0,
        "cutout_prob": 0.0,
        "solarize_prob": 0.0,
    }
    return {"view1": dict(off), "view2": dict(off)}


def preset_names() -> list[str]:
    """Names accepted by `augment_preset` (and by `augment.preset` in configs, besides `auto`)."""
    return PRESETS.names()


def augment_preset(name: str) -> dict[str, Any]:
    """A fresh nested dict {"view1": {...}, "view2": {...}} of `AugmentConfig` overrides.

    Unknown name -> ConfigError listing the presets.
    """
    return copy.deepcopy(PRESETS.get(name)())
