"""Any timm model as the backbone: `model.backbone: timm/<model name>` (e.g. `timm/vit_small_patch16_224`,
`timm/resnet50`, `timm/convnext_tiny`), built with random weights (nothing is downloaded), for
`in_channels` channels and, for models that take an image size (ViT, DeiT, Swin, ...), `image_size` px, with
its classifier removed: the module maps images to the pooled features, d' read from the model.
`model.timm_args` passes further constructor arguments (e.g. `{patch_size: 4, depth: 4}` for a ViT at 32 px).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from compmod.errors import ConfigError, did_you_mean

PREFIX = "timm/"


def timm_backbone(
    name: str, in_channels: int, image_size: int | None, args: dict[str, Any] | None = None
) -> tuple[nn.Module, int]:
    """The timm model `name` (without the `timm/` prefix) and its feature dimension d'."""
    try:
        import timm
    except ImportError:
        raise ConfigError(
            f"config key model.backbone: {PREFIX}{name} needs the timm package; install it with pip install "
            "'compmod[timm]'"
        ) from None
    if not timm.is_model(name):
        hint = did_you_mean(PREFIX + name, [PREFIX + n for n in timm.list_models()])
        raise ConfigError(
            f"config key model.backbone: {PREFIX}{name} is not a timm model{hint}; "
            "`python -c 'import timm; print(timm.list_models())'` lists them"
        )
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0, "in_chans": in_channels, **(args or {})}
    if image_size is not None and "img_size" not in kwargs:
        kwargs["img_size"] = image_size
    try:
        model = timm.create_model(name, **kwargs)
    except TypeError as e:  # a model without an image size (ResNet, ConvNeXt): any size works
        if "img_size" not in str(e) or "img_size" in (args or {}):
            raise ConfigError(
                f"config key model.timm_args: {args!r} is not accepted by timm/{name}: {e}"
            ) from None
        kwargs.pop("img_size")
        model = timm.create_model(name, **kwargs)
    feat_dim = getattr(model, "head_hidden_size", None) or model.num_features
    return model, int(feat_dim)
