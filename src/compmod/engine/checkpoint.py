"""Checkpoints: written atomically (temp file, fsync, rename), loaded with weights_only=True only."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from compmod.errors import CheckpointError

TMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace `path` with what `write(f)` writes to a binary file, so that a crash at any
    moment leaves either the old or the new file: `write` fills a temp file in the same folder
    (`.<name>.<random>.tmp`), which is fsynced, renamed over `path` (os.replace is atomic on one file
    system), and the folder fsynced. On an error the temp file is removed and the error re-raised; an
    OSError that names no file (a full disk while writing) is re-raised naming `path`. A process killed
    mid-write leaves its temp file: `remove_stale_temporaries` removes it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _naming(e, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(e, path) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _naming(e: OSError, path: Path) -> OSError:
    """`e`, or for an OSError with an errno that names no file, the same error naming `path`."""
    if e.filename is not None or e.errno is None:
        return e
    return OSError(e.errno, e.strerror, str(path))  # OSError(errno, ...) picks the subclass of errno


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
