"""Batched image ops with per-sample parameters on float (N, C, H, W) images in [0, 1].

Every per-sample argument is a tensor of shape (N,) (or (N, k)) on the images' device. No Python loop runs
over samples. Functions whose name ends in `_` (and `normalize`, `erase`) work in place on `x`, which must
be a tensor the caller owns: on CPU every large temporary page-faults, so fewer temporaries is faster.
Formulas follow `torchvision.transforms.v2.functional` (the tests compare against it): blend-and-clamp
for brightness / contrast / saturation, ITU-R 601-2 luma for greyscale, exact RGB <-> HSV for hue, reflect
padding for the Gaussian blur, `x >= threshold -> 1 - x` for solarisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2, as torchvision's rgb_to_grayscale


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> new float32 tensor in [0, 1]; a floating input is taken as already in [0, 1]."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    if x.is_floating_point():
        return x.to(torch.float32, copy=True)
    raise TypeError(f"expected uint8 or floating images, got {x.dtype}")


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear antialiased resize to (size, size) as torchvision's `resize`; `x` itself if already so."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """x: (N, C, H, W); mean, std: (C,) on x's device. In place on `x`, which is returned."""
    return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def affine_theta(
    box: torch.Tensor, flip: torch.Tensor, angle: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Per-sample affine matrices (N, 2, 3) for `F.affine_grid` (align_corners=False) that map the square
    output onto the source image: crop box, then horizontal flip, then rotation about the crop centre.

    box: (N, 4) as (cx, cy, w, h) in source pixels (edges at 0 and width/height); flip: (N,) bool;
    angle: (N,) degrees, counter-clockwise as torchvision's `rotate`. The output equals
    rotate(hflip(resized_crop(x))) sampled in one pass.
    """
    cx, cy, w, h = box.unbind(1)
    a = torch.deg2rad(angle)
    cos, sin = torch.cos(a), torch.sin(a)
    sign = 1.0 - 2.0 * flip.to(box.dtype)  # flip negates the x row of the rotation
    sx, sy = w / width, h / height
    row_x = torch.stack([sx * sign * cos, -sx * sign * sin, 2 * cx / width - 1], dim=1)
    row_y = torch.stack([sy * sin, sy * cos, 2 * cy / height - 1], dim=1)
    return torch.stack([row_x, row_y], dim=1)


def sample_affine(
    x: torch.Tensor,
    theta: torch.Tensor,
    size: int,
    zero_fill: torch.Tensor | None,
    extent: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bilinear sample of the (N, 2, 3) affines `theta` (as `F.affine_grid`, align_corners=False) to
    (N, C, size, size).

    `zero_fill` (indices on x's device, or None) are the rotated samples: their points outside the image
    read 0 (torchvision's `rotate` with fill 0). The others must have no rotation (theta[:, 0, 1] =
    theta[:, 1, 0] = 0); their grid is separable, built from (N, 1, size) and (N, size, 1) pieces (much
    cheaper than `affine_grid` on CPU) and clamped to the outer pixel centres, i.e. border padding, which
    equals a plain bilinear resize of the crop. `extent` ((N, 2) h, w on x's device, or None): each
    sample's image occupies only the top-left h x w of x (a canvas), so it is clamped to its own outer
    pixel centres there.
    """
    n, _, height, width = x.shape
    lin = (torch.arange(size, device=x.device, dtype=x.dtype) * 2 + 1) / size - 1  # output pixel centres
    t = theta.to(device=x.device, dtype=x.dtype)
    gx = torch.addcmul(t[:, 0, 2, None, None], t[:, 0, 0, None, None], lin.view(1, 1, size))  # (N, 1, S)
    gy = torch.addcmul(t[:, 1, 2, None, None], t[:, 1, 1, None, None], lin.view(1, size, 1))  # (N, S, 1)
    if extent is None:
        gx, gy = gx.clamp_(-1 + 1 / width, 1 - 1 / width), gy.clamp_(-1 + 1 / height, 1 - 1 / height)
    else:  # the last pixel centre of each sample's own image, in x's normalised coordinates
        e = extent.to(x.dtype)
        hi_x, hi_y = (
            ((2 * e[:, 1] - 1) / width - 1).view(-1, 1, 1),
            ((2 * e[:, 0] - 1) / height - 1).view(-1, 1, 1),
        )
        gx = torch.minimum(gx.clamp_(min=-1 + 1 / width), hi_x)
        gy = torch.minimum(gy.clamp_(min=-1 + 1 / height), hi_y)
    grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)  # (N, S, S, 2)
    if zero_fill is not None:
        rotated = F.affine_grid(
            t.index_select(0, zero_fill), [len(zero_fill), 1, size, size], align_corners=False
        )
        grid.index_copy_(0, zero_fill, rotated)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma; a 1-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (r * LUMA[0]).add_(g, alpha=LUMA[1]).add_(b, alpha=LUMA[2]).unsqueeze(1)


def _blend_(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x <- factor * x + (1 - factor) * other, clamped to [0, 1] (torchvision's `_blend`)."""
    return x.lerp_(other, 1.0 - factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_brightness_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return x.mul_(factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_contrast_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean grey level of each image (any channel count): the mean of the luma image is
    the luma of the channel means, so no grey image is built."""
    means = x.mean(dim=(-2, -1))  # (N, C)
    if x.shape[1] == 3:
        means = means[:, 0] * LUMA[0] + means[:, 1] * LUMA[1] + means[:, 2] * LUMA[2]
    f = factor.view(-1, 1, 1, 1)  # x <- f * x + (1 - f) * mean; lerp_ towards a (N, 1, 1, 1) end is slow
    return x.mul_(f).add_((1.0 - f) * means.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def adjust_saturation_(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the greyscale image. RGB only."""
    return _blend_(x, rgb_to_grayscale(x), factor)


def adjust_hue_(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Exact hue rotation by `shift` (N,) turns (in [-0.5, 0.5]) through HSV, as torchvision. RGB only.

    Hue h (in sixths of a turn) is computed as in torchvision's `_rgb_to_hsv` (ties between maximal
    channels give the same hue). With h wrapped to [0, 6), the inverse is c_n = V - (V - min) * f(n + h),
    n = 5, 3, 1 for R, G, B, where f is the period-6 trapezoid clamp(min(k, 4 - k), 0, 1); for k in
    [1, 11) it equals clamp(2 - ||k - 5| - 3|, 0, 1) (distance to the nearer of the bump centres 2 and 8),
    which runs in place without a modulo on the 3-channel tensor.
    """
    r, g, b = x.unbind(1)
    maxc = x.amax(dim=1)
    delta = x.amin(dim=1).neg_().add_(maxc)
    is_r = maxc == r
    m_g = ((maxc == g) & ~is_r).to(x.dtype)  # g is the maximum (r wins ties)
    m_r = is_r.to(x.dtype)
    m_b = (1.0 - m_r).sub_(m_g)
    h6 = (g - b).mul_(m_r).addcmul_(b - r, m_g).addcmul_(r - g, m_b)
    h6 = h6.div_(delta.clamp(min=1e-12)).add_(m_g, alpha=2.0).add_(m_b, alpha=4.0)  # in [-1, 5)
    h6 = h6.add_(6.0 * shift.view(-1, 1, 1) + 6.0).remainder_(6.0).unsqueeze(1)  # shifted, in [0, 6)
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # 5, 3, 1
    k = torch.add(n, h6, out=x)  # x is no longer needed
    k = k.sub_(5.0).abs_().sub_(3.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)  # f(k)
    return k.mul_(delta.unsqueeze(1)).neg_().add_(maxc.unsqueeze(1))


def blur_kernel_size(image_size: int) -> int:
    """Odd kernel of about 10% of the image side, at least 3 (SimCLR, Chen et al. 2020, Appendix A)."""
    return max(3, 2 * (image_size // 10 // 2) + 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with per-sample `sigma` (N,), reflect padding (as torchvision).

    One depthwise conv per axis: the batch is folded into channels and `groups = N*C`.
    """
    n, c, height, width = x.shape
    t = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - (kernel_size - 1) / 2
    kernel = torch.softmax(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2, dim=1)  # (N, k), sums to 1
    kernel = kernel.repeat_interleave(c, dim=0)  # (N*C, k)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, height, width), [pad, pad, pad, pad], mode="reflect")
    y = F.conv2d(y, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)
    y = F.conv2d(y, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)
    return y.view(n, c, height, width)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert pixels >= threshold (threshold in [0, 1]; 0.5 is 128/255-ish on uint8)."""
    return torch.where(x >= threshold, 1.0 - x, x)


def erase(x: torch.Tensor, box: torch.Tensor, value: float = 0.0) -> torch.Tensor:
    """Fill one rectangle per sample with `value`, in place. box: (N, 4) long (top, left, height, width)."""
    _, _, height, width = x.shape
    top, left, h, w = (v.view(-1, 1) for v in box.unbind(1))
    rows = torch.arange(height, device=x.device).view(1, -1)
    cols = torch.arange(width, device=x.device).view(1, -1)
    in_rows = (rows >= top) & (rows < top + h)
    in_cols = (cols >= left) & (cols < left + w)
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return x.masked_fill_(mask, value)


def log_uniform(
    lo: float, hi: float, shape: tuple[int, ...], generator: torch.Generator | None
) -> torch.Tensor:
    """exp(U(log lo, log hi)), on CPU."""
    u = torch.rand(shape, generator=generator)
    return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)
