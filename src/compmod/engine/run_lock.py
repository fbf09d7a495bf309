"""One process per run directory: an exclusive lock on `<run_dir>/.lock`, held for the whole run.

`fcntl.flock` locks belong to the open file, so the kernel releases them when the process ends however it
ends (exception, SIGKILL, power loss of a local disk): a lock file left by a dead process never blocks.
The holder writes its pid, host and start time into the file for the message a second process gets. The
file itself stays (removing it would let two processes lock two different files of the same name).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from compmod.errors import CompmodError

LOCK_FILE = ".lock"


class RunDirBusyError(CompmodError):
    """Another process holds the run directory's lock."""


class RunDirLock:
    """`with RunDirLock(run_dir):` holds the lock (RunDirBusyError when another process does); `try_acquire`
    and `release` for callers that look for a free directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free (creating the run directory); False when another process holds it.
        OSError (read-only or full disk, no permission) propagates, naming the path."""
        if self._fd is not None:
            return True
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        except OSError:
            pass  # the lock is what matters; the note is for the message of a second process
        return True

    def acquire(self) -> RunDirLock:
        if not self.try_acquire():
            raise RunDirBusyError(
                f"run directory {str(self.run_dir)!r} is in use by another compmod process "
                f"({self.holder()}); wait for it to end, or choose another train.run_dir"
            )
        return self

    def holder(self) -> str:
        """What the holder wrote into the lock file ("pid N on HOST since TIME"), or "pid unknown"."""
        try:
            text = self.path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            text = ""
        return text.splitlines()[0] if text else "pid unknown"

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
