"""Checkpoints: written atomically (temp file, fsync, rename), loaded with weights_only=True only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compmod.errors import CheckpointError
from compmod.files import TMP_SUFFIX, atomic_write

__all__ = ["atomic_write", "load_checkpoint", "remove_stale_temporaries", "save_checkpoint"]


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temp files `atomic_write` left in `folder` when its process was killed mid-write
    (`.<name>.<random>.tmp`; a checkpoint's is as large as the checkpoint). Call it only where no other
    process writes into `folder` (the run directory lock guarantees that for a run). Returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` so that a crash at any moment leaves either the old or the new file."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint on CPU without unpickling arbitrary objects (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError/RuntimeError with long multi-line texts
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load checkpoint {str(path)!r}: {first}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{str(path)!r} is not a compmod checkpoint (no 'model' entry)")
    return state
