"""Files written atomically: a crash at any moment leaves either the old or the new file, never half of one.
The lowest layer: checkpoints, results, caches and index files all go through `atomic_write`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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
