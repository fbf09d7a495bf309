"""Backbones f_theta: (N, C, H, W) float images -> (N, d') features, registered by name in `BACKBONES`.

`build_backbone(name, in_channels, cifar_stem)` returns the module and d'. Every backbone accepts any
number of input channels and any image size >= 16 (global average pooling at the end). `timm/<name>`
builds any timm model instead (models/timm_backbone.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torchvision
from torch import nn

from compmod.errors import ConfigError
from compmod.models.timm_backbone import PREFIX, timm_backbone
from compmod.registry import Registry

BackboneBuilder = Callable[[int, bool], tuple[nn.Module, int]]  # (in_channels, cifar_stem) -> (module, d')

BACKBONES: Registry[BackboneBuilder] = Registry("backbone")


def build_backbone(
    name: str,
    in_channels: int,
    cifar_stem: bool,
    image_size: int | None = None,
    timm_args: dict[str, Any] | None = None,
) -> tuple[nn.Module, int]:
    """Build the backbone `name` for `in_channels`-channel images; returns (module, feature dim d').
    `timm/<model>` is any timm model (models/timm_backbone.py), sized for `image_size` where it needs one."""
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
    if name.startswith(PREFIX):
        return timm_backbone(name.removeprefix(PREFIX), in_channels, image_size, timm_args)
    return BACKBONES.get(name)(in_channels, cifar_stem)


def _init_conv(conv: nn.Conv2d) -> None:
    """He init (fan_out, ReLU), as torchvision initialises its ResNets."""
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


def _resnet(arch: str, in_channels: int, cifar_stem: bool) -> tuple[nn.Module, int]:
    """torchvision ResNet, random init (weights=None), `fc` removed.

    conv1 is rebuilt for `in_channels`. cifar_stem=True: 3x3 stride-1 conv1 and no max-pool, the usual
    stem for 32 px images (SimCLR, Chen et al. 2020, Appendix B.9); otherwise the ImageNet 7x7 stride-2
    conv1 and 3x3 max-pool.
    """
    net = getattr(torchvision.models, arch)(weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    _init_conv(net.conv1)
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feat_dim


@BACKBONES.register("resnet18")
def resnet18(in_channels: int, cifar_stem: bool) -> tuple[nn.Module, int]:
    """ResNet-18 (He et al. 2016), d' = 512."""
    return _resnet("resnet18", in_channels, cifar_stem)


@BACKBONES.register("resnet50")
def resnet50(in_channels: int, cifar_stem: bool) -> tuple[nn.Module, int]:
    """ResNet-50 (He et al. 2016), d' = 2048."""
    return _resnet("resnet50", in_channels, cifar_stem)


class _GridPool(nn.AdaptiveAvgPool2d):
    """Adaptive average pooling that returns its input untouched when it is already the target size
    (28 and 32 px inputs): the identity pool cost ~7 % of a small-CNN training step on CPU."""

    def forward(self, x):
        size = (self.output_size,) * 2 if isinstance(self.output_size, int) else tuple(self.output_size)
        return x if tuple(x.shape[-2:]) == size else super().forward(x)


class SmallCNN(nn.Sequential):
    """A fast CNN for CPU runs on 28-32 px images: conv3x3-BN-ReLU stages, then a 4x4 grid and a linear layer.

    Channels 32 (stride 1) -> 64 (stride 2) -> 128 (stride 2) -> 256 (stride 2), adaptive average pool to
    4x4 (the identity for 28 and 32 px input), flatten, Linear(4096, 512)-BN-ReLU; d' = 512.
    The flattened 4x4 grid keeps the coarse spatial layout that global average pooling would discard: on
    Fashion-MNIST (SimCLR, 3 epochs, demo preset) 5-NN top-1 was 86.38 % with it against 85.08 % with
    global pooling. About 0.029 GFLOP (multiply-adds x 2) per 28x28x1 image.
    Every conv is followed by BatchNorm (the bi-level tests rely on BN being present).
    """

    widths: tuple[int, ...] = (32, 64, 128, 256)
    grid: int = 4
    out_dim: int = 512

    def __init__(self, in_channels: int) -> None:
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)
            _init_conv(conv)
            layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        fc = nn.Linear(c_in * self.grid**2, self.out_dim, bias=False)
        super().__init__(
            *layers,
            _GridPool(self.grid),
            nn.Flatten(1),
            fc,
            nn.BatchNorm1d(self.out_dim),
            nn.ReLU(inplace=True),
        )
        self.feat_dim = self.out_dim


@BACKBONES.register("small_cnn")
def small_cnn(in_channels: int, cifar_stem: bool) -> tuple[nn.Module, int]:
    """`SmallCNN`; `cifar_stem` is ignored (its first conv is already 3x3 stride 1)."""
    net = SmallCNN(in_channels)
    return net, net.feat_dim
