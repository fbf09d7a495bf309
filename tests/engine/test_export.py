"""Weights export: safetensors files that round-trip bit for bit, name their mismatches, and are atomic."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import compmod
from compmod import files as files_mod
from compmod.engine import export as export_mod
from compmod.engine.export import export_weights, load_backbone_weights
from compmod.errors import CheckpointError
from compmod.methods import METHODS, SSLMethod
from compmod.models import build_backbone

META = {"method": "byol+compmod", "backbone": "small_cnn"}


def _method(name: str, backbone: str, in_channels: int = 3, seed: int = 0) -> SSLMethod:
    """A method with small heads whose BatchNorm statistics have moved off their initial values."""
    torch.manual_seed(seed)
    net, feat_dim = build_backbone(backbone, in_channels, cifar_stem=True)
    cls = METHODS.get(name).params
    small = {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16}
    params = cls(**{k: v for k, v in small.items() if k in {f.name for f in dataclasses.fields(cls)}})
    method = METHODS.get(name).build(net, feat_dim, params).train()
    with torch.no_grad():
        method(torch.randn(4, in_channels, 16, 16), torch.randn(4, in_channels, 16, 16))
    return method


@pytest.mark.parametrize(("backbone", "method_name"), [("small_cnn", "byol"), ("resnet18", "simclr")])
def test_export_round_trip_is_bit_identical(tmp_path: Path, backbone: str, method_name: str) -> None:
    method = _method(method_name, backbone)
    paths = export_weights(method, tmp_path / "weights", META)
    assert paths == {
        "backbone": tmp_path / "weights/backbone.safetensors",
        "model": tmp_path / "weights/model.safetensors",
    }

    fresh, _ = build_backbone(backbone, 3, cifar_stem=True)
    metadata = load_backbone_weights(paths["backbone"], fresh)
    assert metadata["method"] == "byol+compmod" and metadata["content"] == "backbone"
    want, got = method.backbone.state_dict(), fresh.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(fresh.eval()(x), method.backbone.eval()(x))

    model = load_file(paths["model"])  # the whole method, EMA teacher and BN buffers included
    full = method.state_dict()
    assert set(model) == set(full) and all(torch.equal(model[k], full[k]) for k in full)
    assert any(k.endswith("num_batches_tracked") for k in model)
    if method_name == "byol":
        assert any(k.startswith("target.") for k in model)  # the EMA teacher


def test_export_is_a_real_safetensors_file_with_metadata(tmp_path: Path) -> None:
    paths = export_weights(_method("simclr", "small_cnn"), tmp_path, META)
    for content, path in paths.items():
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata()
            assert len(list(f.keys())) > 0
        assert metadata == {
            **META,
            "format": "compmod.weights",
            "format_version": "1",
            "content": content,
            "compmod_version": compmod.__version__,
            "torch_version": torch.__version__,
        }
    assert path.read_bytes()[8:9] == b"{"  # 8-byte header length, then the JSON header


class _Tied(nn.Module):
    """Tied weights and a non-contiguous buffer: what safetensors' save_file refuses as-is."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.register_buffer("t", torch.randn(3, 4).t())


class _Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _Tied()


def test_export_handles_shared_and_non_contiguous_tensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    holder = _Holder()
    paths = export_weights(holder, tmp_path, {})
    fresh = _Tied()
    load_backbone_weights(paths["backbone"], fresh)
    for key, value in holder.backbone.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert fresh.b.weight is fresh.a.weight  # loading keeps the module's own tying


def test_export_metadata_must_be_strings_and_not_reserved(tmp_path: Path) -> None:
    method = _method("simclr", "small_cnn")
    with pytest.raises(TypeError, match="str to str"):
        export_weights(method, tmp_path, {"epochs": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="'format' is set by export_weights"):
        export_weights(method, tmp_path, {"format": "mine"})
    with pytest.raises(TypeError, match="no `backbone`"):
        export_weights(nn.Linear(2, 2), tmp_path, {})


def test_load_backbone_weights_errors_name_path_and_keys(tmp_path: Path) -> None:
    paths = export_weights(_method("simclr", "small_cnn"), tmp_path, META)
    with pytest.raises(CheckpointError, match="no weights file at .*nothing.safetensors"):
        load_backbone_weights(tmp_path / "nothing.safetensors", build_backbone("small_cnn", 3, True)[0])

    grey, _ = build_backbone("small_cnn", 1, cifar_stem=True)  # first conv has 1 input channel
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(paths["backbone"], grey)
    msg = str(err.value)
    assert str(paths["backbone"]) in msg and "shape mismatch: " in msg and "\n" not in msg
    with pytest.raises(CheckpointError, match="shape mismatch"):  # shapes are checked even when not strict
        load_backbone_weights(paths["backbone"], grey, strict=False)

    resnet, _ = build_backbone("resnet18", 3, cifar_stem=True)
    with pytest.raises(CheckpointError, match=r"missing keys: .*\(\+\d+ more\); unexpected keys: "):
        load_backbone_weights(paths["backbone"], resnet)

    with pytest.raises(CheckpointError, match="holds a whole method, load backbone.safetensors instead"):
        load_backbone_weights(paths["model"], build_backbone("small_cnn", 3, True)[0])

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="cannot read weights .*garbage.safetensors"):
        load_backbone_weights(garbage, build_backbone("small_cnn", 3, True)[0])


def test_load_backbone_weights_not_strict_allows_extra_keys(tmp_path: Path) -> None:
    method = _method("simclr", "small_cnn")
    paths = export_weights(method, tmp_path, {})
    extended = nn.Sequential()
    extended.add_module("conv", build_backbone("small_cnn", 3, True)[0])
    with pytest.raises(CheckpointError, match="missing keys"):
        load_backbone_weights(paths["backbone"], extended)
    fresh, _ = build_backbone("small_cnn", 3, cifar_stem=True)
    fresh.add_module("extra", nn.Linear(2, 2))
    load_backbone_weights(paths["backbone"], fresh, strict=False)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in method.backbone.state_dict().items())


@pytest.mark.parametrize("where", ["serialise", "write", "rename"])
def test_crash_during_export_keeps_previous_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    paths = export_weights(_method("simclr", "small_cnn", seed=0), tmp_path, META)
    before = {name: path.read_bytes() for name, path in paths.items()}

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    if where == "serialise":
        monkeypatch.setattr(export_mod, "safetensors_bytes", boom)
    elif where == "write":  # half the file written, then the writer fails
        real = files_mod.atomic_write

        def half_then_fail(path: Path, write: object) -> Path:
            return real(path, lambda f: (f.write(b"partial"), boom()))

        monkeypatch.setattr(export_mod, "atomic_write", half_then_fail)
    else:
        monkeypatch.setattr(files_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        export_weights(_method("simclr", "small_cnn", seed=1), tmp_path, META)
    monkeypatch.undo()
    assert {name: path.read_bytes() for name, path in paths.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.safetensors", "model.safetensors"]
    load_backbone_weights(paths["backbone"], build_backbone("small_cnn", 3, cifar_stem=True)[0])
