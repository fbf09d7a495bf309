"""A trained backbone in the formats that downstream code reads: safetensors, torchvision and detectron2.

`export(checkpoint, out_dir)` writes, each atomically:

- ``backbone.safetensors``: compmod's own format (`compmod.engine.export`), any backbone;
- ``<arch>_torchvision.pth`` (e.g. ``resnet50_torchvision.pth``): a plain ``torch.save`` of a dict of
  tensors whose keys are those of ``torchvision.models.<arch>().state_dict()`` minus ``fc.*``, so
  ``resnet50().load_state_dict(sd, strict=False)`` reports only ``fc.weight`` and ``fc.bias`` missing;
  this is the file `compmod.transfer.detect.transfer_detect` fine-tunes;
- ``detectron2.pkl``: ``{"model": {name: numpy array}, "__author__": "compmod", "matching_heuristics":
  True}`` with detectron2's ResNet names (`detectron2_key`), the layout detectron2's
  ``tools/convert-torchvision-to-d2.py`` and MoCo's ``detection/convert-pretrain-to-detectron2.py``
  write. Use it with ``MODEL.WEIGHTS: detectron2.pkl``, ``MODEL.RESNETS.STRIDE_IN_1X1: False`` (torchvision
  ResNets stride in the 3x3 conv), ``INPUT.FORMAT: "RGB"`` and ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` set to
  the normalisation the backbone was pretrained with, in 0-255 units (ImageNet: [123.675, 116.280,
  103.530] / [58.395, 57.120, 57.375]). The pickle is written here and never loaded by compmod.

The torchvision and detectron2 formats need a torchvision ResNet (resnet18/34/50/101/152) with 3 input
channels and the ImageNet stem (7x7 stride-2 conv1, 3x3 max-pool): torchvision's and detectron2's
detection backbones are built with that stem, so a CIFAR-stem or 1-channel backbone is refused.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from compmod.engine.checkpoint import atomic_write
from compmod.engine.export import BACKBONE_FILE, _metadata, _save
from compmod.engine.pretrained import load_pretrained
from compmod.errors import ConfigError, did_you_mean

FORMATS = ("safetensors", "torchvision", "detectron2")
DETECTRON2_FILE = "detectron2.pkl"
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class UnsupportedBackboneError(ConfigError):
    """The backbone cannot be written in the torchvision or detectron2 format."""


def torchvision_file(arch: str) -> str:
    """File name of the torchvision-format weights, e.g. ``resnet50_torchvision.pth``."""
    return f"{arch}_torchvision.pth"


@functools.cache
def _reference_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``torchvision.models.<arch>().state_dict()`` as `_shapes` keeps them (built on the
    meta device: no memory, no initialisation)."""
    with torch.device("meta"):
        net = getattr(torchvision.models, arch)(weights=None)
    return _shapes(net.state_dict())


def _shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {
        k: tuple(v.shape)
        for k, v in state_dict.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }


def torchvision_resnet_name(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The torchvision ResNet whose state_dict has exactly these keys and shapes, or None. ``fc.*`` and
    ``num_batches_tracked`` (absent from torchvision's older weight files) are not compared."""
    shapes = _shapes(state_dict)
    return next((arch for arch in RESNETS if _reference_shapes(arch) == shapes), None)


def check_exportable(backbone: nn.Module) -> str:
    """The torchvision architecture name of `backbone` (e.g. "resnet50"), or a clear refusal.

    Raises:
        UnsupportedBackboneError: not a torchvision ResNet (e.g. small_cnn), the CIFAR stem, or a number
            of input channels other than 3.
    """
    if not isinstance(backbone, torchvision.models.ResNet):
        raise UnsupportedBackboneError(
            f"the torchvision and detectron2 formats need a torchvision ResNet backbone "
            f"({', '.join(RESNETS)}); this one is a {type(backbone).__name__}. "
            f"Export it with --format safetensors"
        )
    conv1 = backbone.conv1
    no_pool = isinstance(backbone.maxpool, nn.Identity)
    if conv1.kernel_size != (7, 7) or conv1.stride != (2, 2) or no_pool:
        raise UnsupportedBackboneError(
            f"this backbone has the CIFAR stem (conv1 {conv1.kernel_size[0]}x{conv1.kernel_size[1]} stride "
            f"{conv1.stride[0]}, max-pool {'removed' if no_pool else 'kept'});"
            " torchvision's and detectron2's detection models need the ImageNet stem (7x7 stride-2 conv1 "
            "and 3x3 max-pool): pretrain with model.cifar_stem=false"
        )
    if conv1.in_channels != 3:
        raise UnsupportedBackboneError(
            f"this backbone takes {conv1.in_channels}-channel images; the torchvision and detectron2 "
            "formats need 3 (RGB): pretrain with data.channels=3"
        )
    arch = torchvision_resnet_name(backbone.state_dict())
    if arch is None:
        raise UnsupportedBackboneError(
            f"the backbone's keys and shapes match none of torchvision's {', '.join(RESNETS)}"
        )
    return arch


def torchvision_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """`backbone.state_dict()` without ``fc.*`` as contiguous CPU copies, checked by `check_exportable`."""
    check_exportable(backbone)
    return {
        k: v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
        for k, v in backbone.state_dict().items()
        if not k.startswith("fc.")
    }


def detectron2_key(key: str) -> str:
    """A torchvision ResNet key in detectron2's ResNet names, as ``convert-torchvision-to-d2.py`` renames:

    - keys outside ``layer1-4`` get the prefix ``stem.`` (``conv1.weight`` -> ``stem.conv1.weight``);
    - ``layer{i}`` -> ``res{i+1}`` (``layer1`` -> ``res2`` ... ``layer4`` -> ``res5``);
    - ``bn{t}`` -> ``conv{t}.norm`` for t = 1, 2, 3 (``bn1.running_var`` -> ``stem.conv1.norm.running_var``);
    - ``downsample.0`` -> ``shortcut`` and ``downsample.1`` -> ``shortcut.norm``.

    Parameter and buffer names stay (``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked``). Done on dot-separated parts, so an unexpected key is an error, not a silent
    partial rename.
    """
    parts = key.split(".")
    if parts[0].startswith("layer"):
        stage, block, *rest = parts
        out = [f"res{int(stage[5:]) + 1}", block]
    else:
        out, rest = ["stem"], parts
    if len(rest) == 3 and rest[0] == "downsample" and rest[1] in ("0", "1"):
        out += ["shortcut"] if rest[1] == "0" else ["shortcut", "norm"]
    elif len(rest) == 2 and rest[0] in ("conv1", "conv2", "conv3"):
        out += [rest[0]]
    elif len(rest) == 2 and rest[0] in ("bn1", "bn2", "bn3"):
        out += [f"conv{rest[0][2]}", "norm"]
    else:
        raise ValueError(f"{key!r} is not a torchvision ResNet backbone key")
    return ".".join([*out, rest[-1]])


def detectron2_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The object detectron2 reads from a ``.pkl`` file: renamed keys, numpy values."""
    model = {detectron2_key(k): v.detach().cpu().numpy() for k, v in state_dict.items()}
    return {"model": model, "__author__": "compmod", "matching_heuristics": True}


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    formats = tuple(formats)
    if not formats:
        raise ConfigError(f"no export format given; choose from {', '.join(FORMATS)}")
    for name in formats:
        if name not in FORMATS:
            hint = did_you_mean(name, FORMATS)
            raise ConfigError(f"unknown export format {name!r}{hint}; choose from {', '.join(FORMATS)}")
    return formats


def export_backbone(
    backbone: nn.Module,
    out_dir: str | Path,
    formats: Iterable[str] = FORMATS,
    metadata: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write `backbone` in each of `formats` into `out_dir` (created if missing), each file atomically.

    The backbone is checked before anything is written, so a refused backbone leaves no files behind.
    `metadata` (str -> str) goes into the safetensors header.

    Returns:
        {format: path}, e.g. {"safetensors": out_dir/backbone.safetensors, "torchvision":
        out_dir/resnet50_torchvision.pth, "detectron2": out_dir/detectron2.pkl}.
    """
    formats = _check_formats(formats)
    out_dir = Path(out_dir)
    tv: dict[str, torch.Tensor] = {}
    arch = ""
    if "torchvision" in formats or "detectron2" in formats:
        arch = check_exportable(backbone)
        tv = torchvision_state_dict(backbone)
    paths: dict[str, Path] = {}
    for name in formats:
        if name == "safetensors":
            meta = _metadata(metadata or {}, "backbone")
            paths[name] = _save(backbone, out_dir / BACKBONE_FILE, meta)
        elif name == "torchvision":
            paths[name] = atomic_write(out_dir / torchvision_file(arch), lambda f: torch.save(tv, f))
        else:
            d2 = detectron2_checkpoint(tv)
            paths[name] = atomic_write(out_dir / DETECTRON2_FILE, lambda f, d2=d2: pickle.dump(d2, f, 4))
    return paths


def export(
    checkpoint_path: str | Path, out_dir: str | Path, formats: Iterable[str] = FORMATS
) -> dict[str, Path]:
    """Export the backbone of a compmod checkpoint (``RUN/checkpoints/last.pt``); see `export_backbone`.

    The checkpoint is loaded with ``weights_only=True`` and the method rebuilt from its saved config.
    """
    formats = _check_formats(formats)
    pre = load_pretrained(checkpoint_path)
    meta = {"method": pre.label, "backbone": pre.cfg.model.backbone}
    return export_backbone(pre.method.backbone, out_dir, formats, meta)
