"""`load_pretrained`: the one way from a training checkpoint to its trained method, used by every command
that starts from a checkpoint (`compmod eval`, `compmod export`, the report's t-SNE)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compmod.config.load import apply_override, config_from_dict
from compmod.config.schema import Config
from compmod.engine.builders import build_method
from compmod.engine.checkpoint import load_checkpoint
from compmod.engine.checkpoint_content import load_matching, saved_config, saved_image_format
from compmod.methods import SSLMethod


@dataclass
class Pretrained:
    """A checkpoint's method with its weights loaded (on the CPU), the config it was rebuilt from (the
    saved one with the overrides), the pretraining images' (C, H, W), mean and std, and the run folder."""

    method: SSLMethod
    cfg: Config
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    run_dir: Path
    label: str  # the method's label as saved (e.g. "simclr+compmod")


def load_pretrained(checkpoint: str | Path, overrides: list[str] | None = None) -> Pretrained:
    """Load `checkpoint` (``weights_only=True``), rebuild its method from its saved config with `overrides`
    (``--set`` items) and load the weights. A missing, unreadable or mismatched checkpoint is a
    one-line `CheckpointError` naming it."""
    state: dict[str, Any] = load_checkpoint(checkpoint)
    raw = saved_config(state, checkpoint)
    for item in overrides or []:
        apply_override(raw, item)
    cfg = config_from_dict(raw)
    shape, mean, std = saved_image_format(state, checkpoint)
    method = build_method(cfg, shape[0], shape[1])
    built_from = f"its config with --set {' '.join(overrides)}" if overrides else "its config"
    load_matching(method, state["model"], checkpoint, built_from)
    ckpt = Path(checkpoint).resolve()
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    label = str(state.get("method", cfg.method.name))
    return Pretrained(method, cfg, tuple(shape), tuple(mean), tuple(std), run_dir, label)  # type: ignore[arg-type]
