"""Export formats: torchvision ResNets load the weights with only fc missing and compute the same features;
detectron2 names follow convert-torchvision-to-d2.py; backbones the formats cannot hold are refused."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from tests.helpers import run_cli
from torch import nn

from compmod.config import load_config
from compmod.config.load import config_to_dict
from compmod.engine.builders import build_method
from compmod.engine.checkpoint import save_checkpoint
from compmod.engine.export import load_backbone_weights
from compmod.errors import ConfigError
from compmod.models import build_backbone
from compmod.transfer.export_formats import (
    FORMATS,
    UnsupportedBackboneError,
    detectron2_checkpoint,
    detectron2_key,
    export,
    export_backbone,
)


def _trained_looking(backbone: nn.Module, seed: int = 0) -> nn.Module:
    """Move the BatchNorm statistics off their initial 0/1 so a wrong buffer mapping would show."""
    torch.manual_seed(seed)
    backbone.train()
    with torch.no_grad():
        backbone(torch.randn(4, 3, 64, 64) * 2 + 0.5)
    return backbone.eval()


def _reference_d2_key(key: str) -> str:
    """The substring rules of detectron2's tools/convert-torchvision-to-d2.py, applied in its order."""
    if "layer" not in key:
        key = "stem." + key
    for t in [1, 2, 3, 4]:
        key = key.replace(f"layer{t}", f"res{t + 1}")
    for t in [1, 2, 3]:
        key = key.replace(f"bn{t}", f"conv{t}.norm")
    return key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_export_loads_with_only_fc_missing_and_same_features(tmp_path: Path, arch: str) -> None:
    backbone = _trained_looking(build_backbone(arch, 3, cifar_stem=False)[0])
    paths = export_backbone(backbone, tmp_path, ["torchvision"])
    assert paths == {"torchvision": tmp_path / f"{arch}_torchvision.pth"}

    sd = torch.load(paths["torchvision"], weights_only=True)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    assert list(sd) == [k for k in net.state_dict() if not k.startswith("fc.")]
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["fc.weight", "fc.bias"] and result.unexpected_keys == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torchvision_features = nn.Sequential(*list(net.children())[:-1])(x).flatten(1)  # up to avgpool
        assert torch.equal(torchvision_features, backbone(x))


def test_detectron2_key_known_names() -> None:
    known = {
        "conv1.weight": "stem.conv1.weight",
        "bn1.weight": "stem.conv1.norm.weight",
        "bn1.running_mean": "stem.conv1.norm.running_mean",
        "bn1.running_var": "stem.conv1.norm.running_var",
        "bn1.num_batches_tracked": "stem.conv1.norm.num_batches_tracked",
        "layer1.0.conv1.weight": "res2.0.conv1.weight",
        "layer1.0.bn3.bias": "res2.0.conv3.norm.bias",
        "layer2.0.downsample.0.weight": "res3.0.shortcut.weight",
        "layer2.0.downsample.1.running_var": "res3.0.shortcut.norm.running_var",
        "layer4.2.bn2.weight": "res5.2.conv2.norm.weight",
    }
    for key, want in known.items():
        assert detectron2_key(key) == want == _reference_d2_key(key)
    for bad in ("fc.weight", "layer1.0.relu.weight", "layer1.0.downsample.2.weight"):
        with pytest.raises(ValueError, match="not a torchvision ResNet backbone key"):
            detectron2_key(bad)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_detectron2_format_renames_every_tensor_as_the_reference_script(tmp_path: Path, arch: str) -> None:
    backbone = _trained_looking(build_backbone(arch, 3, cifar_stem=False)[0])
    path = export_backbone(backbone, tmp_path, ["detectron2"])["detectron2"]
    assert path == tmp_path / "detectron2.pkl"
    with open(path, "rb") as f:
        obj = pickle.load(f)  # written by the test's own export: safe to unpickle here
    assert obj["__author__"] == "compmod" and obj["matching_heuristics"] is True and len(obj) == 3
    sd = backbone.state_dict()
    assert len(obj["model"]) == len(sd)  # every tensor, no two keys renamed alike
    for key, value in sd.items():
        d2 = obj["model"][_reference_d2_key(key)]
        assert isinstance(d2, np.ndarray) and np.array_equal(d2, value.numpy()), key
    assert {k.split(".")[0] for k in obj["model"]} == {"stem", "res2", "res3", "res4", "res5"}
    assert detectron2_checkpoint(sd)["model"].keys() == obj["model"].keys()


@pytest.mark.parametrize(
    ("name", "channels", "cifar_stem", "fragment"),
    [
        ("small_cnn", 3, False, "need a torchvision ResNet backbone"),
        ("resnet18", 3, True, "need the ImageNet stem"),
        ("resnet50", 1, False, "takes 1-channel images"),
    ],
)
def test_export_refuses_backbones_the_formats_cannot_hold(
    tmp_path: Path, name: str, channels: int, cifar_stem: bool, fragment: str
) -> None:
    backbone, _ = build_backbone(name, channels, cifar_stem)
    for fmt in ("torchvision", "detectron2"):
        with pytest.raises(UnsupportedBackboneError, match=fragment):
            export_backbone(backbone, tmp_path / "out", ["safetensors", fmt])
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert export_backbone(backbone, tmp_path / "st", ["safetensors"])["safetensors"].is_file()


def test_export_unknown_format_suggests(tmp_path: Path) -> None:
    backbone, _ = build_backbone("resnet18", 3, cifar_stem=False)
    with pytest.raises(
        ConfigError, match="unknown export format 'torchvison' \\(did you mean torchvision\\?\\)"
    ):
        export_backbone(backbone, tmp_path, ["torchvison"])


def _checkpoint(path: Path, backbone: str, cifar_stem: bool) -> tuple[Path, nn.Module]:
    """A checkpoint with the entries of Trainer._checkpoint that `export` reads; returns it and the method."""
    overrides = [
        f"model.backbone={backbone}",
        f"model.cifar_stem={str(cifar_stem).lower()}",
        "data.channels=3",
    ]
    cfg = load_config(None, [*overrides, "method.name=simclr"])
    method = build_method(cfg, 3, 64)
    _trained_looking(method.backbone)
    state = {
        "method": "simclr",
        "model": method.state_dict(),
        "config": config_to_dict(cfg),
        "data": {"shape": [3, 64, 64], "mean": [0.5] * 3, "std": [0.25] * 3},
    }
    return save_checkpoint(state, path), method


def test_export_from_checkpoint_writes_every_format(tmp_path: Path) -> None:
    ckpt, method = _checkpoint(tmp_path / "run/checkpoints/last.pt", "resnet18", cifar_stem=False)
    paths = export(ckpt, tmp_path / "export")
    assert list(paths) == list(FORMATS)
    assert paths["torchvision"].name == "resnet18_torchvision.pth"

    fresh, _ = build_backbone("resnet18", 3, cifar_stem=False)
    assert load_backbone_weights(paths["safetensors"], fresh)["method"] == "simclr"
    want = method.backbone.state_dict()
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in want.items())
    sd = torch.load(paths["torchvision"], weights_only=True)
    assert sd.keys() == want.keys() and all(torch.equal(sd[k], v) for k, v in want.items())
    with open(paths["detectron2"], "rb") as f:
        assert len(pickle.load(f)["model"]) == len(want)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(p.name for p in paths.values())


def test_cli_export_formats_match_the_library() -> None:
    from compmod.cli.transfer import EXPORT_FORMATS

    assert EXPORT_FORMATS == FORMATS


@pytest.mark.slow
def test_cli_export_writes_formats_and_refuses_cifar_stem_in_one_line(tmp_path: Path) -> None:
    ckpt, _ = _checkpoint(tmp_path / "a/last.pt", "resnet18", cifar_stem=False)
    proc = run_cli(
        "export",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(tmp_path / "out"),
        "--format",
        "torchvision",
        "detectron2",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "torchvision": str(tmp_path / "out/resnet18_torchvision.pth"),
        "detectron2": str(tmp_path / "out/detectron2.pkl"),
    }
    cifar, _ = _checkpoint(tmp_path / "b/last.pt", "resnet18", cifar_stem=True)
    proc = run_cli("export", "--checkpoint", str(cifar), "--out", str(tmp_path / "out2"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        "compmod: error: this backbone has the CIFAR stem (conv1 3x3 stride 1, max-pool removed)"
    )
    assert "need the ImageNet stem" in line and not (tmp_path / "out2").exists()
