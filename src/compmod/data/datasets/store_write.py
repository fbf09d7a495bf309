"""Writing a prepared store (`store`): decoding the files in worker processes and writing the folder.

`prepare_store` returns the store of a spec, decoding it first when it is missing: the parent writes in
file order into a temporary folder that is renamed into place when complete, so a crash leaves no
half-written store and concurrent preparers each produce a whole, identical one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compmod.data.datasets import jpeg
from compmod.data.datasets.folder import DECODE_ERRORS, SKIP_HINT, unreadable_reason
from compmod.data.datasets.store import (
    STORE_VERSION,
    VARIABLE_SOURCES,
    Source,
    StoreSpec,
    default_side,
    store_path,
)
from compmod.errors import DataError

_CHUNK = 64  # files per task handed to a worker
_log = logging.getLogger("compmod.data")


# ---- decoding (runs in the worker processes) ---------------------------------------------------------
def _shorter_side(img: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (C, H, W) resized (antialiased bilinear) so that min(H, W) == side, aspect ratio kept."""
    h, w = img.shape[1:]
    out = (side, max(1, round(w * side / h))) if h <= w else (max(1, round(h * side / w)), side)
    if out == (h, w):
        return img
    return F.interpolate(img[None], size=out, mode="bilinear", align_corners=False, antialias=True)[0]


def _centre(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[1:]
    top, left = (h - size) // 2, (w - size) // 2
    return img[:, top : top + size, left : left + size]


def decode_views(path: Path, side: int, size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the image at shorter side `side`, its evaluation view size x size), uint8 (C, ., .) each.

    Raises one of `DECODE_ERRORS` for an unreadable file."""
    img = jpeg.decode_native(path, channels)
    stored = _shorter_side(img, side)
    eval_side = default_side(size)
    view = stored if eval_side == side else _shorter_side(img, eval_side)
    return stored.contiguous(), _centre(view, size).contiguous()


Decoded = tuple[np.ndarray, np.ndarray] | str  # (stored image, evaluation view), or why it is unreadable


def _decode_task(args: tuple[list[Path], int, int, int]) -> list[Decoded]:
    files, side, size, channels = args
    out: list[Decoded] = []
    for path in files:
        try:
            stored, view = decode_views(path, side, size, channels)
            out.append((stored.numpy(), view.numpy()))
        except DECODE_ERRORS as e:
            out.append(unreadable_reason(path, e))
    return out


def _decoded(
    files: list[Path], spec: StoreSpec, workers: int
) -> Iterator[tuple[np.ndarray, np.ndarray] | str]:
    """Each file's (stored image, evaluation view) or the reason it is unreadable, in file order."""
    chunk = max(1, min(_CHUNK, math.ceil(len(files) / max(1, workers))))
    tasks = [(files[i : i + chunk], spec.side, spec.size, spec.channels) for i in range(0, len(files), chunk)]
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield from _decode_task(task)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that has started torch's threads
    # one thread per worker process (one process per core); decoding in this process leaves its threads
    with ProcessPoolExecutor(
        min(workers, len(tasks)), mp_context=context, initializer=torch.set_num_threads, initargs=(1,)
    ) as pool:
        for result in pool.map(_decode_task, tasks):
            yield from result


# ---- writing -------------------------------------------------------------------------------------------
def prepare_store(
    spec: StoreSpec, sources: dict[str, Source], classes: Sequence[str], skip: bool, workers: int = 1
) -> Path:
    """The store of `spec` over `sources`: the existing one, or decoded now with `workers` processes.

    `skip`: leave unreadable files out (listed in meta.json), else stop with a `DataError` naming the
    first one. Returns the store's folder."""
    path = store_path(spec, sources)
    if _valid(path):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise DataError(
            f"cannot write the store {path} ({e}); set data.store_dir to a writable folder"
        ) from None
    try:
        bad = {name: _write_source(tmp, name, src, spec, skip, workers) for name, src in sources.items()}
        meta = {
            "version": STORE_VERSION,
            "name": spec.name,
            "classes": list(classes),
            "side": spec.side,
            "size": spec.size,
            "channels": spec.channels,
            "bad": bad,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, path)
        except OSError:  # another process put a complete store there first
            if not _valid(path):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(
            f"cannot write the store {path} ({e}); set data.store_dir to a folder with room"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_stale(path)
    return path


def _write_source(
    folder: Path, name: str, src: Source, spec: StoreSpec, skip: bool, workers: int
) -> dict[str, str]:
    """Decode one source into `folder`; return {unreadable file: reason}."""
    n, c, s = len(src.files), spec.channels, spec.size
    views = np.memmap(folder / f"{name}.eval.bin", mode="w+", dtype=np.uint8, shape=(n, c, s, s))
    variable = name in VARIABLE_SOURCES
    index = np.zeros((n, 3), dtype=np.int64)
    kept: list[int] = []
    bad: dict[str, str] = {}
    offset = 0
    with open(folder / f"{name}.images.bin", "wb") if variable else contextlib.nullcontext() as out:
        for i, result in enumerate(_decoded(src.files, spec, workers)):
            if isinstance(result, str):
                if not skip:
                    raise DataError(f"cannot decode image {src.files[i]}: {result}; {SKIP_HINT}")
                bad[str(src.files[i])] = result
                continue
            stored, view = result
            views[len(kept)] = view
            if out is not None:
                out.write(stored.tobytes())
                index[len(kept)] = (offset, stored.shape[1], stored.shape[2])
                offset += stored.nbytes
            kept.append(i)
    if not kept:
        raise DataError(
            f"all {n} images of {spec.root / name} are unreadable; first: {next(iter(bad.items()))}"
        )
    views.flush()
    del views
    os.truncate(folder / f"{name}.eval.bin", len(kept) * c * s * s)  # unreadable files left out
    np.save(folder / f"{name}.labels.npy", src.labels[kept])
    if variable:
        np.save(folder / f"{name}.index.npy", index[: len(kept)])
    return bad


def _valid(path: Path) -> bool:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("version") == STORE_VERSION


def _remove_stale(path: Path) -> None:
    """Delete the stores of the same folder and format made for another file list."""
    prefix = path.name.rsplit("-", 1)[0]
    for old in path.parent.glob(f"{prefix}-*"):
        if old != path and old.is_dir() and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
            _log.info("removed stale store %s", old)
