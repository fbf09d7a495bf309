"""User-facing errors: the CLI prints these as one line and exits with code 2."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class CompmodError(Exception):
    """An error caused by the user's input (config, data, paths), not by a bug."""


class ConfigError(CompmodError, ValueError):
    """A config key or value is invalid."""


class DatasetNotFoundError(CompmodError, FileNotFoundError):
    """A dataset is not on disk where it was looked for."""


class DataError(CompmodError, ValueError):
    """A dataset is on disk but cannot be read (corrupt file, bad layout)."""


class CheckpointError(CompmodError, FileNotFoundError):
    """A checkpoint is missing or cannot be loaded."""


class NonFiniteLossError(CompmodError, FloatingPointError):
    """Training produced a NaN or infinite loss."""


class TrainingInterrupted(CompmodError):
    """SIGTERM or SIGINT arrived during training; a checkpoint was written before stopping."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class FileSystemError(CompmodError, OSError):
    """A file cannot be written or opened: full disk, read-only file system, no permission."""

    WRITE = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "over the disk quota", errno.EROFS: ""}
    ACCESS = (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR)

    @classmethod
    def from_os_error(cls, e: OSError) -> FileSystemError | None:
        """The one-line error for an OSError of the file system (None for others, which are bugs or
        cannot be fixed by the user): "cannot write PATH: No space left on device (the disk is full)"."""
        if e.errno not in cls.WRITE and e.errno not in cls.ACCESS:
            return None
        where = f" {e.filename}" if e.filename is not None else ""
        verb = "write" if e.errno in cls.WRITE else "access"
        hint = cls.WRITE.get(e.errno, "") if e.errno is not None else ""
        return cls(f"cannot {verb}{where}: {e.strerror}" + (f" ({hint})" if hint else ""))


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice to `name`, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
