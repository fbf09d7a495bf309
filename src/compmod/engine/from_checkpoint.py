"""Evaluate the encoder saved in a training checkpoint: what `compmod eval PROTOCOL` does."""

from __future__ import annotations

from pathlib import Path

from compmod.engine.device import resolve_device
from compmod.engine.pretrained import load_pretrained
from compmod.errors import ConfigError
from compmod.eval.protocol import EVALS, evaluate, selected

PROTOCOLS = {
    "knn": ("knn",),
    "linear": ("linear",),
    "all": EVALS,  # those the config's eval switches select, as in training (`selected`)
    "semi": ("semi",),
    "diagnostics": ("diagnostics",),
}


def evaluate_checkpoint(
    checkpoint: str | Path, protocol: str = "all", overrides: list[str] | None = None
) -> dict[str, float]:
    """Rebuild the method from `checkpoint` (`load_pretrained`: its saved config with `overrides` as `--set`
    items) and run `protocol` (see PROTOCOLS; "all" honours eval.linear, eval.pixel_knn and eval.semi as
    training's evaluation does). Semi-supervised subset files go to `<run dir>/semi_indices`."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown evaluation protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
    pre = load_pretrained(checkpoint, overrides)
    cfg = pre.cfg
    device = resolve_device(cfg.train.device)
    method = pre.method.to(device)
    which = selected(cfg) if protocol == "all" else list(PROTOCOLS[protocol])
    semi_dir = pre.run_dir / "semi_indices"
    return evaluate(method.backbone, cfg, device, pre.mean, pre.std, which, method=method, index_dir=semi_dir)
