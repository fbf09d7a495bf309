"""The on-disk cache of decoded image splits (decoding itself: `compmod.data.datasets.jpeg`).

A decoded split is written once as uint8 (N, C, size, size) to ``$COMPMOD_CACHE_DIR`` (default
``~/.cache/compmod/decoded/``) as ``<dataset>-<source>-<size>px-<C>ch-<folder>-<fingerprint>.npy``
plus a ``.json`` listing the unreadable files. <source> is the folder the files come from (``train``
serves both the pretrain and train splits), <folder> hashes its path, and the fingerprint hashes the
file list (count, paths, sizes, modification times): adding, removing or touching a file decodes again,
and the new cache replaces those of the same folder and format made for other file lists. Files are
written under a temporary name and moved into place with `os.replace`, so a crash never leaves a
half-written cache and concurrent writers (one per data-parallel rank) each write a whole, identical
file. A split is decoded straight into the memory-mapped temporary file (its disk space reserved
first), so the whole array is never held in process memory.

A cached split is opened with ``numpy.load(mmap_mode="r")`` and wrapped by `torch.from_numpy` without
a copy: loading is instant and pages are read from disk when first touched. The tensor is read-only
memory: writing into it in place crashes the process (nothing in compmod does; copy it first).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from compmod.data.datasets import jpeg
from compmod.data.datasets.folder import SKIP_HINT, report_skipped
from compmod.errors import DataError
from compmod.files import atomic_write

CACHE_VERSION = 1  # bump when the decoded pixels of the same files change
_log = logging.getLogger("compmod.data")


def cache_dir() -> Path:
    """Where decoded splits are cached: ``$COMPMOD_CACHE_DIR``, else ``~/.cache/compmod/decoded``."""
    return Path(os.environ.get("COMPMOD_CACHE_DIR") or "~/.cache/compmod/decoded").expanduser()


def fingerprint(files: Sequence[Path]) -> str:
    """16 hex digits hashing the count, paths, sizes and modification times of `files` (and the cache
    version); a missing file hashes as such and is reported unreadable when decoded."""
    h = hashlib.sha256(f"compmod-decoded-v{CACHE_VERSION} {len(files)}\n".encode())
    for path in files:
        try:
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()[:16]


def cache_path(name: str, source: str, root: Path, files: Sequence[Path], size: int, channels: int) -> Path:
    """``<cache_dir>/<name>-<source>-<size>px-<channels>ch-<folder hash>-<fingerprint(files)>.npy``."""
    folder = hashlib.sha256(str((root / source).absolute()).encode()).hexdigest()[:8]
    return cache_dir() / f"{name}-{source}-{size}px-{channels}ch-{folder}-{fingerprint(files)}.npy"


def _open_cached(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, dict[str, str]] | None:
    """The cached array (memory-mapped read-only) and its unreadable files, or None when absent/stale."""
    try:
        meta = json.loads(path.with_suffix(".json").read_text())
        bad = {str(p): str(reason) for p, reason in meta["bad"].items()}
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if meta.get("version") != CACHE_VERSION or arr.shape != shape or arr.dtype != np.uint8:
        return None
    return arr, bad


def _remove_stale(path: Path) -> None:
    """Delete the caches of the same folder, size and channels made for another file list (ImageNet's
    take up to 190 GB each). A process still reading one keeps its mapping until it closes it."""
    prefix = path.name.rsplit("-", 1)[0]
    for old in path.parent.glob(f"{prefix}-*"):
        if old.suffix in (".npy", ".json") and old.stem != path.stem:
            with contextlib.suppress(OSError):
                old.unlink()
                _log.info("removed stale decode cache %s", old)


def _decode_to_cache(path: Path, files: Sequence[Path], shape: tuple[int, ...], skip: bool) -> dict[str, str]:
    """Decode `files` into a new memory-mapped ``.npy`` at `path` (via a temporary file); return the
    unreadable files. An `OSError` means the cache cannot be written (nothing is left behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        if hasattr(os, "posix_fallocate"):  # no room on disk: an OSError now, not a SIGBUS mid-decode
            with open(tmp, "r+b") as f:
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(tmp))
        _, _, bad = jpeg.decode_files(files, shape[2], shape[1], skip, out)
        out.flush()
        del out
        bad_str = {str(p): reason for p, reason in bad.items()}
        text = json.dumps({"version": CACHE_VERSION, "bad": bad_str}).encode()
        atomic_write(path.with_suffix(".json"), lambda f: f.write(text))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return bad_str


def readonly_tensor(arr: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # torch warns that the memory-mapped array is not writable
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


def decoded_split(
    name: str,
    split: str,
    source: str,
    root: Path,
    files: list[Path],
    size: int,
    channels: int,
    on_bad_image: str,
) -> tuple[torch.Tensor, list[int], tuple[str, ...]]:
    """The images of `files` at size x size with `channels`, from the cache or decoded into it.

    Args:
        name, split: dataset and split, for the cache file name and messages.
        source: the folder the files come from ("train", "val"); splits sharing it share the cache.
        root: the dataset folder (skipped files are listed relative to it).
        files, size, channels: see `decode_files`.
        on_bad_image: "fail" or "skip", applied as by the folder loader, also to a cached split.

    Returns:
        (images, kept, skipped): uint8 (len(kept), channels, size, size), memory-mapped from the cache
        when it could be written (else in memory, with a warning); the indices into `files` of the
        images; the skipped files' paths.
    """
    shape = (len(files), channels, size, size)
    path = cache_path(name, source, root, files, size, channels)
    skip = on_bad_image == "skip"
    cached = _open_cached(path, shape)
    if cached is None:
        try:
            _decode_to_cache(path, files, shape, skip)
            _remove_stale(path)
            cached = _open_cached(path, shape)
        except OSError as e:
            gib = math.prod(shape) / 2**30
            _log.warning(
                "cannot write the decode cache %s (%s); decoding %s %r into memory (%.1f GiB): set "
                "COMPMOD_CACHE_DIR to a writable folder with room",
                path,
                e,
                name,
                split,
                gib,
            )
    if cached is None:
        arr, _, bad_paths = jpeg.decode_files(files, size, channels, skip)
        images, bad = torch.from_numpy(arr), {str(p): r for p, r in bad_paths.items()}
    else:
        images, bad = readonly_tensor(cached[0]), cached[1]
    if bad and not skip:  # a split cached under "skip" still fails under "fail", as decoding would
        first, reason = next(iter(bad.items()))
        raise DataError(f"cannot decode image {first}: {reason}; {SKIP_HINT}")
    if bad:
        report_skipped(root, split, files, {Path(p): r for p, r in bad.items()})
    kept = [i for i, f in enumerate(files) if str(f) not in bad]
    return images[: len(kept)], kept, tuple(bad)
