"""BatchAugment: each op against torchvision.transforms.v2.functional on the same images, plus invariants
(shapes, normalisation, determinism per seed, per-sample parameters, the `ops` rule, presets, errors)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch.testing import assert_close
from torchvision.transforms import InterpolationMode

from compmod.config.augment import AUGMENT_OPS, AugmentConfig, ViewAugment
from compmod.config.augment_presets import augment_preset, preset_names
from compmod.data import augment as augment_module
from compmod.data import augment_ops as ops_
from compmod.data.augment import BatchAugment, build_views, eval_transform
from compmod.data.augment_params import OP_DEFAULT_PROB, restrict_ops, sample_crop_boxes
from compmod.errors import ConfigError

MEAN3, STD3 = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=NO_GPU)]


def _images(n: int = 6, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


def _view(**overrides: object) -> ViewAugment:
    """Every op off (the "none" preset) except `overrides`."""
    return ViewAugment(**{**augment_preset("none")["view1"], **overrides})


def _aug(c: int = 3, size: int = 32, **overrides: object) -> BatchAugment:
    return BatchAugment(_view(**overrides), size, MEAN3 if c == 3 else (0.5,), STD3 if c == 3 else (0.25,))


def _config(name: str, ops: list[str] | None = None) -> AugmentConfig:
    d = augment_preset(name)
    v1, v2 = ViewAugment(**d["view1"]), ViewAugment(**d["view2"])
    return AugmentConfig(preset=name, ops=ops, view1=v1, view2=v2)


def _unnormalise(aug: BatchAugment, y: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(aug.mean).expand(y.shape[1]).view(1, -1, 1, 1)
    s = torch.tensor(aug.std).expand(y.shape[1]).view(1, -1, 1, 1)
    return y.cpu() * s + m


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", preset_names())
def test_batch_augment_shape_dtype_device(name: str, channels: int, device: str) -> None:
    for view in build_views(_config(name), 24, (0.5,), (0.25,)):
        y = view(_images(c=channels).to(device), torch.Generator().manual_seed(0))
        assert y.shape == (6, channels, 24, 24) and y.dtype == torch.float32 and y.device.type == device
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_batch_augment_leaves_input_alone_and_takes_non_square(dtype: torch.dtype) -> None:
    x = _images(n=4)[:, :, :24, :].to(dtype)  # 24 x 32
    x = x / 255 if dtype.is_floating_point else x
    before = x.clone()
    for view in build_views(_config("byol", ops=list(AUGMENT_OPS)), 32, MEAN3, STD3):
        assert view(x, torch.Generator().manual_seed(0)).shape == (4, 3, 32, 32)
    assert torch.equal(x, before)
    assert eval_transform(x, 32, MEAN3, STD3).shape == (4, 3, 32, 32) and torch.equal(x, before)


@pytest.mark.parametrize(("src", "size"), [(32, 32), (28, 32), (32, 24)])
@pytest.mark.parametrize("channels", [1, 3])
def test_batch_augment_identity_equals_eval_transform(src: int, size: int, channels: int) -> None:
    x = _images(c=channels, size=src)
    aug = _aug(channels, size)
    y = aug(x, torch.Generator().manual_seed(0))
    assert_close(y, eval_transform(x, size, aug.mean, aug.std), rtol=0, atol=0)
    ref = TF.resize(x.float() / 255, [size, size], antialias=True)
    ref = TF.normalize(ref, list(aug.mean), list(aug.std))
    assert_close(y, ref, rtol=0, atol=1e-5)
    if src == size:
        mean, std = torch.tensor(aug.mean).view(1, -1, 1, 1), torch.tensor(aug.std).view(1, -1, 1, 1)
        assert_close(y, (x.float() / 255 - mean) / std)


def test_batch_augment_deterministic_per_seed_and_random_per_sample() -> None:
    view = BatchAugment(_config("simclr").view1, 32, MEAN3, STD3)
    x = _images(n=8)
    a = view(x, torch.Generator().manual_seed(1))
    assert_close(a, view(x, torch.Generator().manual_seed(1)), rtol=0, atol=0)
    assert not torch.allclose(a, view(x, torch.Generator().manual_seed(2)))
    same = view(x[:1].expand(8, -1, -1, -1), torch.Generator().manual_seed(1))  # one image, 8 draws
    flat = same.flatten(1)
    assert all(not torch.allclose(flat[i], flat[j]) for i in range(8) for j in range(i))


def test_cpu_chunks_give_the_same_views(monkeypatch: pytest.MonkeyPatch) -> None:
    probs = {f"{op}_prob": 0.7 for op in AUGMENT_OPS if op != "crop"}
    view = BatchAugment(_view(crop=True, **probs), 32, MEAN3, STD3)
    x = _images(n=40)
    whole = view(x, torch.Generator().manual_seed(5))
    monkeypatch.setattr(augment_module, "CPU_CHUNK_ELEMENTS", 7 * 3 * 32 * 32)  # chunks of 7 samples
    chunked = view(x, torch.Generator().manual_seed(5))
    # Same parameters, different code path: a chunk of 7 rows may take other SIMD loops (vector body vs
    # remainder, AVX-512 vs AVX2 kernels) than the whole batch, so each float32 op may round differently
    # (seen: up to 9.5e-7 on an Intel Xeon, 0 on AMD EPYC). Bound: ~10 ops (resample, 4 jitter ops, grey,
    # blur of <= 9 taps, normalise), each within a few ulp of |values| <= ~3 after normalisation:
    # 10 * 4 * 2^-24 * 4 / std(0.2) ~ 1e-5 absolute. A wrong parameter or row would differ by ~0.1-1.
    assert_close(chunked, whole, rtol=0, atol=1e-5)


@NO_GPU
def test_batch_augment_same_seed_same_views_on_cpu_and_cuda() -> None:
    view = BatchAugment(_config("byol").view2, 32, MEAN3, STD3, ops=list(AUGMENT_OPS))
    x = _images(n=16)
    cpu = view(x, torch.Generator().manual_seed(3))
    gpu = view(x.cuda(), torch.Generator().manual_seed(3))
    assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)


@pytest.mark.parametrize("src", [24, 32])
def test_crop_full_box_equals_plain_resize(src: int) -> None:
    x = _images(size=src)
    aug = _aug(crop=True, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    y = _unnormalise(aug, aug(x, torch.Generator().manual_seed(0)))
    ref = F.interpolate(x.float() / 255, size=(32, 32), mode="bilinear", align_corners=False)  # upsampling
    assert_close(y, ref, rtol=0, atol=1e-5)
    assert_close(y, TF.resize(x.float() / 255, [32, 32], antialias=True), rtol=0, atol=1e-5)


def test_crop_box_matches_torchvision_resized_crop() -> None:
    """An integer box, upsampled: equal to crop-then-resize away from the border (at the border we read the
    pixels just outside the crop where torchvision clamps to the crop edge)."""
    x = _images(n=2)
    aug = _aug(crop=True)
    p = aug.sample(2, 32, 32, torch.Generator().manual_seed(0))
    top, left, h, w = 4, 6, 16, 20
    p.box = torch.tensor([[left + w / 2, top + h / 2, w, h]]).expand(2, 4)
    y = _unnormalise(aug, aug.apply(x, p))
    ref = TF.resized_crop(x.float() / 255, top, left, h, w, [32, 32], antialias=False)
    assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], rtol=0, atol=1e-5)


def test_separable_grid_equals_affine_grid() -> None:
    """The fast grid of unrotated samples is affine_grid clamped to the outer pixel centres; rotated ones
    use affine_grid unclamped (zero fill)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 20, 30, generator=g)
    box = sample_crop_boxes(8, 20, 30, (0.08, 1.0), (3 / 4, 4 / 3), g)
    flip, rotated = torch.rand(8, generator=g) < 0.5, torch.arange(8) % 3 == 0
    theta = ops_.affine_theta(box, flip, 40.0 * rotated, 20, 30)
    grid = F.affine_grid(theta, [8, 3, 16, 16], align_corners=False)
    lim = torch.tensor([1 - 1 / 30, 1 - 1 / 20])
    grid = torch.where(rotated.view(-1, 1, 1, 1), grid, torch.maximum(torch.minimum(grid, lim), -lim))
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert_close(ops_.sample_affine(x, theta, 16, rotated.nonzero().squeeze(1)), ref, rtol=0, atol=1e-5)


def test_crop_boxes_follow_random_resized_crop() -> None:
    g = torch.Generator().manual_seed(0)
    box = sample_crop_boxes(4000, 30, 40, (0.08, 1.0), (3 / 4, 4 / 3), g)
    cx, cy, w, h = box.unbind(1)
    assert (cx - w / 2 >= -1e-4).all() and (cx + w / 2 <= 40 + 1e-4).all()
    assert (cy - h / 2 >= -1e-4).all() and (cy + h / 2 <= 30 + 1e-4).all()
    area, ratio = w * h / 1200, w / h
    assert area.min() >= 0.08 - 1e-5 and area.max() <= 1 + 1e-5 and area.std() > 0.2
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    # no try can fit (ratio 2 at full area): torchvision's centre-crop fallback (full width, h = w / 2)
    box = sample_crop_boxes(5, 32, 32, (1.0, 1.0), (2.0, 2.0), g)
    assert_close(box, torch.tensor([[16.0, 16.0, 32.0, 16.0]]).expand(5, 4))


@pytest.mark.parametrize("crop", [False, True])
def test_flip_prob_one_equals_horizontal_flip(crop: bool) -> None:
    x = _images()
    aug = _aug(flip_prob=1.0, crop=crop, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    y = _unnormalise(aug, aug(x, torch.Generator().manual_seed(0)))
    assert_close(y, TF.horizontal_flip(x.float() / 255), rtol=0, atol=1e-5 if crop else 1e-6)
    assert_close(y, torch.flip(x.float() / 255, dims=[-1]), rtol=0, atol=1e-5 if crop else 1e-6)


@pytest.mark.parametrize("angle", [90.0, 30.0, -45.0])
def test_rotation_matches_torchvision_rotate(angle: float) -> None:
    x = _images()
    aug = _aug(rotation_prob=1.0, rotation_degrees=90.0)
    p = aug.sample(6, 32, 32, torch.Generator().manual_seed(0))
    p.angle = torch.full((6,), angle)  # force the sample
    y = _unnormalise(aug, aug.apply(x, p))
    ref = TF.rotate(x.float() / 255, angle, interpolation=InterpolationMode.BILINEAR)
    assert_close(y, ref, rtol=0, atol=1e-4)
    if angle == 90.0:
        assert_close(y, torch.rot90(x.float() / 255, k=1, dims=(-2, -1)), rtol=0, atol=1e-5)


JITTER = [
    ("brightness", 0, TF.adjust_brightness),
    ("contrast", 1, TF.adjust_contrast),
    ("saturation", 2, TF.adjust_saturation),
    ("hue", 3, TF.adjust_hue),
]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("field", "k", "reference"), JITTER)
def test_jitter_matches_torchvision_per_sample(
    field: str, k: int, reference: Callable, channels: int
) -> None:
    """Each jitter op alone, with the per-sample factor the module drew; hue is exact HSV (atol 1e-5)."""
    x = _images(n=8, c=channels)
    strengths = {f: 0.0 for f in ("brightness", "contrast", "saturation", "hue")}
    aug = _aug(channels, jitter_prob=1.0, **{**strengths, field: 0.5 if field == "hue" else 0.8})
    p = aug.sample(8, 32, 32, torch.Generator().manual_seed(0))
    y = _unnormalise(aug, aug.apply(x, p))
    xf = x.float() / 255
    assert p.factors is not None and p.factors[:, k].unique().numel() == 8
    if channels == 1 and field in ("saturation", "hue"):  # no-ops on grey images
        assert_close(y, xf, rtol=0, atol=1e-6)
        return
    ref = torch.stack([reference(xf[i], float(p.factors[i, k])) for i in range(8)])
    assert_close(y, ref, rtol=0, atol=1e-5)


def test_hue_exact_on_grey_ties_and_extreme_shifts() -> None:
    """Grey pixels, ties between maximal channels, saturated primaries; shifts up to +-0.5 turn."""
    levels = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0])
    pixels = torch.cartesian_prod(levels, levels, levels).T.reshape(1, 3, 5, 25)  # all 125 combinations
    shifts = torch.tensor([-0.5, -0.37, -0.1, 0.0, 0.25, 0.5])
    xf = pixels.expand(6, -1, -1, -1)
    y = ops_.adjust_hue_(xf.clone(), shifts)
    ref = torch.stack([TF.adjust_hue(xf[i], float(s)) for i, s in enumerate(shifts)])
    assert_close(y, ref, rtol=0, atol=1e-5)


def test_jitter_op_order_is_drawn_per_batch() -> None:
    aug = _aug(jitter_prob=1.0)
    orders = {aug.sample(4, 32, 32, torch.Generator().manual_seed(s)).order for s in range(40)}
    assert len(orders) > 5 and all(sorted(o) == [0, 1, 2, 3] for o in orders)


@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_matches_rgb_to_grayscale(channels: int) -> None:
    x = _images(c=channels)
    aug = _aug(channels, grayscale_prob=1.0)
    y = _unnormalise(aug, aug(x, torch.Generator().manual_seed(0)))
    ref = TF.rgb_to_grayscale(x.float() / 255, num_output_channels=channels)
    assert_close(y, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 64])
def test_gaussian_blur_matches_torchvision(size: int, channels: int) -> None:
    x = _images(c=channels, size=size)
    aug = _aug(channels, size, blur_prob=1.0, blur_sigma=(1.3, 1.3))
    y = _unnormalise(aug, aug(x, torch.Generator().manual_seed(0)))
    k = ops_.blur_kernel_size(size)
    assert k == {32: 3, 64: 7}[size]
    assert_close(y, TF.gaussian_blur(x.float() / 255, [k, k], [1.3, 1.3]), rtol=0, atol=1e-5)


def test_gaussian_blur_per_sample_sigma() -> None:
    xf, sigma = _images(n=4, size=40).float() / 255, torch.tensor([0.2, 0.7, 1.5, 3.0])
    y = ops_.gaussian_blur(xf, sigma, 5)
    ref = torch.stack([TF.gaussian_blur(xf[i], [5, 5], [float(s)] * 2) for i, s in enumerate(sigma)])
    assert_close(y, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_solarize_matches_torchvision(channels: int) -> None:
    x = _images(c=channels)
    aug = _aug(channels, solarize_prob=1.0, solarize_threshold=0.6)
    y = _unnormalise(aug, aug(x, torch.Generator().manual_seed(0)))
    assert_close(y, TF.solarize(x.float() / 255, 0.6), rtol=0, atol=1e-6)


def test_op_with_probability_touches_only_its_samples() -> None:
    x = _images(n=64)
    aug = _aug(solarize_prob=0.5)
    p = aug.sample(64, 32, 32, torch.Generator().manual_seed(0))
    assert p.solarize is not None and 10 < int(p.solarize.sum()) < 54
    y = _unnormalise(aug, aug.apply(x, p))
    xf = x.float() / 255
    assert_close(y[p.solarize], TF.solarize(xf[p.solarize], 0.5), rtol=0, atol=1e-6)
    assert_close(y[~p.solarize], xf[~p.solarize], rtol=0, atol=1e-6)


def test_cutout_fills_one_rectangle_with_the_mean() -> None:
    x = _images(n=16)
    aug = _aug(cutout_prob=1.0, cutout_scale=(0.1, 0.2))
    y = aug(x, torch.Generator().manual_seed(0))
    clean = eval_transform(x, 32, MEAN3, STD3)
    erased = (y != clean).any(dim=1)  # (N, H, W): 0 after normalisation == the mean colour before
    assert (y.permute(0, 2, 3, 1)[erased] == 0).all()
    for m in erased:
        rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert int(m.sum()) == h * w and 0.05 < h * w / 1024 < 0.25  # one rectangle, area ~ U(0.1, 0.2)


@pytest.mark.parametrize("op", AUGMENT_OPS)
def test_every_op_alone_on_one_channel(op: str) -> None:
    aug = BatchAugment(_view(), 32, (0.5,), (0.25,), ops=[op])
    assert aug.active_ops() == [op]
    x = _images(n=16, c=1, size=28)
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.shape == (16, 1, 32, 32) and torch.isfinite(y).all()
    assert torch.equal(y, eval_transform(x, 32, (0.5,), (0.25,))) == (op == "grayscale")  # no-op on grey


def test_ops_restricts_and_turns_listed_ops_on() -> None:
    simclr = _config("simclr").view1
    v = restrict_ops(simclr, ["flip", "rotation"])
    assert not v.crop and v.jitter_prob == v.grayscale_prob == v.blur_prob == 0.0
    assert v.flip_prob == simclr.flip_prob and v.rotation_prob == OP_DEFAULT_PROB["rotation"]
    assert restrict_ops(simclr, None) is simclr
    a, b = build_views(_config("none", ops=["crop", "grayscale"]), 32, MEAN3, STD3)
    assert a.active_ops() == b.active_ops() == ["crop", "grayscale"]
    assert a.view.grayscale_prob == OP_DEFAULT_PROB["grayscale"]


def test_presets() -> None:
    assert set(preset_names()) == {"default", "simclr", "byol", "barlow_twins", "none"}
    for name in preset_names():
        cfg = _config(name)  # every key is a ViewAugment field
        assert augment_preset(name) == augment_preset(name)  # a fresh copy each call
        assert augment_preset(name) is not augment_preset(name)
        views = build_views(cfg, 32, MEAN3, STD3)
        assert all(v.active_ops() == [] for v in views) == (name == "none")
    byol = _config("byol")
    assert (byol.view1.blur_prob, byol.view2.blur_prob) == (1.0, 0.1)
    assert (byol.view1.solarize_prob, byol.view2.solarize_prob) == (0.0, 0.2)
    assert _config("barlow_twins") == dataclasses.replace(byol, preset="barlow_twins")
    assert _config("simclr").view1 == _config("simclr").view2 and _config("simclr").view1.blur_prob == 0.0


def test_errors_are_config_errors_naming_the_value() -> None:
    with pytest.raises(ConfigError, match="unknown augment preset 'simclrr'.*simclr.*choose one of"):
        augment_preset("simclrr")
    with pytest.raises(ConfigError, match="unknown augment op 'flips'.*did you mean flip"):
        BatchAugment(_view(), 32, MEAN3, STD3, ops=["flips"])
    with pytest.raises(ConfigError, match="flip_prob: 1.5"):
        BatchAugment(_view(flip_prob=1.5), 32, MEAN3, STD3)
    with pytest.raises(ConfigError, match=r"augment.view2.crop_scale: \(0.5, 0.1\)"):
        build_views(dataclasses.replace(_config("none"), view2=_view(crop_scale=(0.5, 0.1))), 32, MEAN3, STD3)
    with pytest.raises(ConfigError, match="1-channel images"):
        BatchAugment(_view(), 32, MEAN3, STD3)(_images(c=1))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        eval_transform(_images()[:, :2], 32, MEAN3[:1], STD3[:1])
