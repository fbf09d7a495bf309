"""model.backbone: timm/<name>: any timm model, random weights, input channels and size honoured, d' read
from the model; every method and CompMod mode trains a step with a ViT."""

from __future__ import annotations

import math

import pytest
import torch
from tests.helpers import method_overrides

from compmod.config import load_config
from compmod.engine.builders import build_method, build_train_step
from compmod.errors import ConfigError
from compmod.methods import METHODS
from compmod.models.backbones import build_backbone

pytest.importorskip("timm")
VIT_ARGS = {"patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2}
VIT = [
    "model.backbone=timm/vit_tiny_patch16_224",
    "model.timm_args={patch_size: 4, depth: 2, embed_dim: 32, num_heads: 2}",
]


@pytest.mark.parametrize(
    "name, args, channels, size, feat_dim",
    [
        ("timm/vit_tiny_patch16_224", VIT_ARGS, 1, 32, 32),
        ("timm/vit_tiny_patch16_224", {}, 3, 64, 192),  # 64 px: 16 patches of 16
        ("timm/resnet18", {}, 3, 40, 512),
        ("timm/convnext_atto", {}, 1, 32, 320),
    ],
)
def test_channels_size_and_feature_dim(name, args, channels, size, feat_dim) -> None:
    net, d = build_backbone(name, channels, cifar_stem=True, image_size=size, timm_args=args)
    assert d == feat_dim
    with torch.no_grad():
        assert net(torch.randn(2, channels, size, size)).shape == (2, feat_dim)
    if "vit" in name:
        assert net.patch_embed.img_size == (size, size) and net.patch_embed.proj.in_channels == channels


def test_unknown_model_and_bad_arguments_are_one_line_config_errors() -> None:
    with pytest.raises(
        ConfigError,
        match=r"timm/vit_smal_patch16_224 is not a timm model \(did you mean timm/vit_small_patch16_224\?\)",
    ):
        build_backbone("timm/vit_smal_patch16_224", 3, True, 32)
    with pytest.raises(
        ConfigError, match=r"model.timm_args: \{'no_such_argument': 1\} is not accepted by timm/resnet18"
    ):
        build_backbone("timm/resnet18", 3, True, 32, {"no_such_argument": 1})
    with pytest.raises(ConfigError, match="model.timm_args: expected a mapping"):
        load_config(None, ["model.timm_args=[1, 2]"])


@pytest.mark.parametrize(
    "method, mode", [(m, "jvp") for m in METHODS.names()] + [("simclr", m) for m in ("exact", "off", None)]
)
def test_every_method_and_compmod_mode_steps_with_a_vit(method: str, mode: str | None) -> None:
    cm = ["compmod.enabled=false"] if mode is None else ["compmod.enabled=true", f"compmod.meta.mode={mode}"]
    cfg = load_config(
        None, [*VIT, *method_overrides(method), "method.proj_hidden_dim=32", "method.proj_dim=16", *cm]
    )
    torch.manual_seed(0)
    step = build_train_step(cfg, 1, 32, torch.device("cpu"), steps_per_epoch=4)
    g = torch.Generator().manual_seed(0)
    x1, x2 = (torch.randn(16, 1, 32, 32, generator=g) for _ in range(2))
    before = [p.detach().clone() for p in step.method.backbone.parameters()]
    for i in range(2):
        total, parts = step.step(x1, x2, 0.05, (i + 1) / 2)
        assert math.isfinite(float(total)), parts
    assert any(not torch.equal(a, p) for a, p in zip(before, step.method.backbone.parameters(), strict=True))
    if mode in ("jvp", "exact"):
        assert math.isfinite(float(parts["hypergrad_norm"])) and float(parts["hypergrad_norm"]) > 0


def test_build_method_reads_the_feature_dimension_from_timm() -> None:
    method = build_method(load_config(None, [*VIT, "method.proj_hidden_dim=32"]), 1, 32)
    assert method.feat_dim == 32 and method.projector[0].in_features == 32
