"""Mask R-CNN with a ResNet-FPN, and loading a compmod backbone into it (`compmod transfer detect`).

Model. The modules of ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=ResNet50_Weights...)``,
i.e. torchvision's recipe for a pretrained backbone: FrozenBatchNorm2d in the ResNet (the pretrained
statistics and affine parameters are kept) and the stem + res2 frozen (``trainable_layers=3``). Called
with ``weights_backbone=None`` that builder switches to trainable BatchNorm and all layers, so the model
is assembled here from the same parts (`build_mask_rcnn`). One change: the mask logits layer is
initialised as detectron2 does (normal, std 0.001; bias 0). torchvision's Kaiming fan-out init gives it
std sqrt(2 / K), i.e. 0.82 for K = 3 classes: on the shapes data the initial loss_mask was ~10 instead of
ln 2 and training diverged to NaN within 8 iterations; with the small init it trains stably.
``arch="r18"`` puts the same heads on a ResNet-18-FPN (for quick CPU demos); Table 5 is ``arch="r50"``,
the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

from compmod.errors import CheckpointError, ConfigError
from compmod.transfer.export_formats import torchvision_resnet_name

ARCHS = {"r50": "resnet50", "r18": "resnet18"}


def build_mask_rcnn(
    num_classes: int, arch: str = "r50", trainable_layers: int = 3, min_size: int = 800, max_size: int = 1333
) -> MaskRCNN:
    """Mask R-CNN with a ResNet-FPN (FrozenBatchNorm2d, random init); `num_classes` counts the background."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown detection arch {arch!r}; choose from {', '.join(ARCHS)}")
    if not 0 <= trainable_layers <= 5:
        raise ConfigError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    backbone = resnet_fpn_backbone(
        backbone_name=ARCHS[arch],
        weights=None,
        norm_layer=FrozenBatchNorm2d,
        trainable_layers=trainable_layers,
    )
    model = MaskRCNN(backbone, num_classes=num_classes, min_size=min_size, max_size=max_size)
    logits = model.roi_heads.mask_predictor.mask_fcn_logits  # detectron2's init of the mask predictor
    nn.init.normal_(logits.weight, std=0.001)
    nn.init.zeros_(logits.bias)
    return model


def read_backbone_weights(weights: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict from a ``.pth`` file (loaded with weights_only=True), a compmod
    ``backbone.safetensors`` file, or a dict."""
    if isinstance(weights, Mapping):
        return dict(weights)
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(f"no backbone weights at {str(path)!r}; write them with `compmod export`")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read backbone weights {str(path)!r}: {first}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{str(path)!r} is not a state dict of tensors")
    return sd


def load_detection_backbone(model: MaskRCNN, state_dict: Mapping[str, torch.Tensor], arch: str) -> None:
    """Copy a torchvision ResNet state dict into ``model.backbone.body``; every body key must be matched.

    ``fc.*`` is ignored, and ``num_batches_tracked`` (FrozenBatchNorm2d keeps no counter).
    """
    want = ARCHS[arch]
    sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    found = torchvision_resnet_name(sd)
    if found != want:
        what = f"a torchvision {found}" if found else "no torchvision ResNet (keys or shapes differ)"
        conv1 = sd.get("conv1.weight")
        if found is None and conv1 is not None and tuple(conv1.shape[1:]) != (3, 7, 7):
            what += f"; conv1 is {tuple(conv1.shape)}: Mask R-CNN needs an RGB ImageNet stem (7x7 conv1)"
        hint = next((f"; use arch={a!r}" for a, name in ARCHS.items() if name == found), "")
        raise CheckpointError(f"the backbone weights are {what}, not the {want} of arch={arch!r}{hint}")
    body = model.backbone.body
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    result = body.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:  # cannot happen after the check above
        raise CheckpointError(f"backbone keys do not match: {result}")
