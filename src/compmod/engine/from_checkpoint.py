"""Evaluate the encoder saved in a training checkpoint: what `compmod eval PROTOCOL` does."""

from __future__ import annotations

from pathlib import Path

from compmod.eval.protocol import EVALS, evaluate

PROTOCOLS = {
    "knn": ("knn",),
    "linear": ("linear",),
    "all": EVALS,  # and "semi" when the config's eval.semi is true
    "semi": ("semi",),
    "diagnostics": ("diagnostics",),
}


def evaluate_checkpoint(
    checkpoint: str | Path, protocol: str = "all", overrides: list[str] | None = None
) -> dict[str, float]:
    """Rebuild the method from `checkpoint` (its saved config, with `overrides` as `--set` items), load its
    weights and run `protocol` (see PROTOCOLS). Semi-supervised subset files go to `<run dir>/semi_indices`,
    beside the `checkpoints/` folder."""
    from compmod.config.load import apply_override, config_from_dict
    from compmod.engine.builders import build_method
    from compmod.engine.checkpoint import load_checkpoint
    from compmod.engine.checkpoint_content import load_matching, saved_config, saved_image_format
    from compmod.engine.device import resolve_device
    from compmod.errors import ConfigError

    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    state = load_checkpoint(checkpoint)
    raw = saved_config(state, checkpoint)
    for item in overrides or []:
        apply_override(raw, item)
    cfg = config_from_dict(raw)
    (c, h, _), mean, std = saved_image_format(state, checkpoint)
    method = build_method(cfg, c, h)
    built_from = f"its config with --set {' '.join(overrides)}" if overrides else "its config"
    load_matching(method, state["model"], checkpoint, built_from)
    device = resolve_device(cfg.train.device)
    method.to(device)
    which = [*PROTOCOLS[protocol], *(["semi"] if protocol == "all" and cfg.eval.semi else [])]
    ckpt = Path(checkpoint).resolve()
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return evaluate(
        method.backbone, cfg, device, mean, std, which, method=method, index_dir=run_dir / "semi_indices"
    )
