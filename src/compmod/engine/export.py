"""Trained weights as safetensors files: no pickle on load, readable by other frameworks, memory-mappable.

`export_weights` writes, atomically, ``backbone.safetensors`` (the encoder f_theta alone, what a
downstream user fine-tunes or probes) and ``model.safetensors`` (the whole method: projector,
predictor, EMA teacher and every buffer). `load_backbone_weights` reads the first into a backbone.
Checkpoints for resuming (optimizer, schedule, config) stay in `compmod.engine.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes
from torch import nn

import compmod
from compmod.engine.checkpoint import atomic_write
from compmod.errors import CheckpointError

FORMAT = "compmod.weights"
FORMAT_VERSION = "1"
BACKBONE_FILE = "backbone.safetensors"
MODEL_FILE = "model.safetensors"
_RESERVED = ("format", "format_version", "content", "compmod_version", "torch_version")
_SHOWN = 5  # keys named in a mismatch error


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module.state_dict()` as detached, contiguous CPU copies. Each key gets its own memory:
    safetensors refuses tensors that share storage (tied weights, views of one buffer)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key] = value.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
    return out


def _metadata(metadata: dict[str, str], content: str) -> dict[str, str]:
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str; got {key!r}: {value!r}")
        if key in _RESERVED:
            raise ValueError(
                f"metadata key {key!r} is set by export_weights; reserved: {', '.join(_RESERVED)}"
            )
    return {
        **metadata,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "content": content,
        "compmod_version": getattr(compmod, "__version__", "unknown"),
        "torch_version": torch.__version__,
    }


def _save(module: nn.Module, path: Path, metadata: dict[str, str]) -> Path:
    """One safetensors file, serialised in memory first and then written atomically."""
    data = safetensors_bytes(_tensors(module), metadata)
    return atomic_write(path, lambda f: f.write(data))


def export_weights(method: nn.Module, out_dir: str | Path, metadata: dict[str, str]) -> dict[str, Path]:
    """Write ``out_dir/backbone.safetensors`` and ``out_dir/model.safetensors``, each atomically.

    Args:
        method: the trained method; ``method.backbone`` is exported alone and the whole
            ``method.state_dict()`` (EMA teacher and buffers included) as the model.
        out_dir: created if missing; files already there are replaced (a crash leaves each file
            either old or new).
        metadata: str -> str stored in both headers, e.g. ``{"method": "byol+compmod", "backbone":
            "resnet18"}``. Added to it: format, format_version, content ("backbone" or "model"),
            compmod_version and torch_version, which callers may not set.

    Returns:
        {"backbone": path, "model": path}.
    """
    backbone = getattr(method, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{type(method).__name__} has no `backbone` module to export")
    out_dir = Path(out_dir)
    return {
        "backbone": _save(backbone, out_dir / BACKBONE_FILE, _metadata(metadata, "backbone")),
        "model": _save(method, out_dir / MODEL_FILE, _metadata(metadata, "model")),
    }


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_backbone_weights(path: str | Path, backbone: nn.Module, strict: bool = True) -> dict[str, str]:
    """Load a ``backbone.safetensors`` file into `backbone` (in place, on the backbone's device).

    Reads the file with safetensors only (no pickle). `strict=False` allows missing and unexpected keys;
    a shape mismatch is an error either way.

    Returns:
        The file's metadata (empty when it has none).

    Raises:
        CheckpointError: the file is missing or not a safetensors file, or its keys or shapes do not
            match the backbone (the message names the path and the first mismatching keys).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {str(path)!r}")
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except Exception as e:  # SafetensorError on a bad header, OSError on a short file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read weights {str(path)!r}: {first}") from None
    expected = backbone.state_dict()
    problems: list[str] = []
    shapes = [
        f"{key} {tuple(tensors[key].shape)} in the file vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in tensors and tensors[key].shape != value.shape
    ]
    if shapes:
        problems.append(f"shape mismatch: {_listed(shapes)}")
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    if strict and missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if problems:
        hint = ""
        if metadata.get("content") == "model":
            hint = f"; this file holds a whole method, load {BACKBONE_FILE} instead"
        raise CheckpointError(f"weights {str(path)!r} do not fit the backbone: {'; '.join(problems)}{hint}")
    backbone.load_state_dict(tensors, strict=strict)
    return metadata
