"""The prepared store of an image-file dataset: decoded once (`compmod prepare-data`), read by every rank.

Training crops come from the images at their own aspect ratio (solo-learn's DALI pipeline and FFCV do the
same), evaluation uses the standard view (resize the shorter side to size / 0.875, centre crop size), and
nothing is decoded while training: under torchrun a missing store is an error naming the command.

A store is one folder, ``<stores>/<name>-<side>s-<size>px-<C>ch-<folder hash>-<fingerprint>/``::

    meta.json              version, classes, side, size, channels, the unreadable files of each source
    <source>.labels.npy    int64 (N,) for each source folder (train, val)
    <source>.eval.bin      uint8 (N, C, size, size): the evaluation view of every image
    train.images.bin       uint8: every train image, aspect ratio kept, shorter side `side`, C x h x w
    train.index.npy        int64 (N, 3): byte offset, h, w of each image in train.images.bin

<folder hash> hashes the dataset folder's path and <fingerprint> its file list (paths, sizes, modification
times), so adding or touching a file prepares a new store, which replaces the stale ones of that folder.

Storage is raw uint8, not JPEG (measured by `benchmarks/data_path.py`, results/data_path.md): at side 256
an ImageNet-sized image is ~241 KiB raw against ~18 KiB as a quality-90 JPEG, but one thread copies ~23k
raw images/s out of the store where it decodes ~3.6k of those JPEGs/s (smooth generated images; real
photographs decode slower): a JPEG store would put a decoder back on every step's path, the wait this
store exists to remove, for a 13x smaller footprint.
At side 256 ImageNet's train store is ~336 GB (side 160: ~131 GB); `compmod plan` prints the figure.

Decoding runs in `workers` processes, each taking chunks of files; the parent writes in file order into
a temporary folder that is renamed into place when complete, so a crash leaves no half-written store and
concurrent preparers each produce a whole, identical one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compmod.data.datasets import jpeg
from compmod.data.datasets.decode_cache import cache_dir, fingerprint, readonly_tensor
from compmod.data.datasets.folder import DECODE_ERRORS, SKIP_HINT, unreadable_reason
from compmod.errors import DataError

STORE_VERSION = 1
CENTRE_CROP = 0.875  # the evaluation view: shorter side to size / 0.875, then the centre size x size
VARIABLE_SOURCES = ("train",)  # sources whose images are also stored at their own aspect ratio
_CHUNK = 64  # files per task handed to a worker
_log = logging.getLogger("compmod.data")


def default_side(size: int) -> int:
    """The stored shorter side for training at `size` px: size / 0.875 (256 for 224), as the eval view."""
    return round(size / CENTRE_CROP)


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds: `name`'s images from the folder `root`, shorter side `side` (train crops), the
    evaluation view at `size`, `channels` (1 or 3); `folder`: where stores live (None: the cache)."""

    name: str
    root: Path
    side: int
    size: int
    channels: int
    folder: Path | None = None


@dataclass(frozen=True)
class Source:
    """The files of one source folder ("train", "val") in label order, and their labels."""

    files: list[Path]
    labels: np.ndarray


def store_path(spec: StoreSpec, sources: dict[str, Source]) -> Path:
    """The folder a store of `spec` over `sources` lives in (see the module docstring)."""
    parent = spec.folder if spec.folder is not None else cache_dir() / "stores"
    where = hashlib.sha256(str(spec.root.absolute()).encode()).hexdigest()[:8]
    files = [f for name in sorted(sources) for f in sources[name].files]
    tag = fingerprint(files)
    return parent / f"{spec.name}-{spec.side}s-{spec.size}px-{spec.channels}ch-{where}-{tag}"


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
    torch.set_num_threads(1)  # one process per core
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
    with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context) as pool:
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


# ---- reading -------------------------------------------------------------------------------------------
class VariableImages:
    """The images of a store's source at their own aspect ratio: `sizes` (N, 2) int64 (h, w) and
    `region(i, y0, y1, x0, x1)`, a read-only uint8 (C, y1 - y0, x1 - x0) view of image i."""

    def __init__(self, data: np.ndarray, index: np.ndarray, channels: int) -> None:
        self.data, self.index, self.channels = data, index, channels
        self.sizes = torch.from_numpy(np.ascontiguousarray(index[:, 1:]))

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, n: int) -> VariableImages:
        return VariableImages(self.data, self.index[:n], self.channels)

    def image(self, i: int) -> np.ndarray:
        offset, h, w = (int(v) for v in self.index[i])
        return self.data[offset : offset + self.channels * h * w].reshape(self.channels, h, w)

    def region(self, i: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """uint8 (C, y1 - y0, x1 - x0) of image i, read-only (memory-mapped): copy it before writing."""
        return readonly_tensor(self.image(i)[:, y0:y1, x0:x1])

    def nbytes(self) -> int:
        return int(self.index[:, 1:].prod(axis=1).sum()) * self.channels


@dataclass
class Store:
    """An opened store: `classes`, `meta` and the arrays of each source (memory-mapped, read-only)."""

    path: Path
    meta: dict

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def eval_view(self, source: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 (N, C, size, size) evaluation views, int64 (N,) labels) of `source`."""
        labels = np.load(self.path / f"{source}.labels.npy")
        c, s = int(self.meta["channels"]), int(self.meta["size"])
        path = self.path / f"{source}.eval.bin"
        views = np.memmap(path, dtype=np.uint8, mode="r", shape=(len(labels), c, s, s))
        return readonly_tensor(views), torch.from_numpy(labels)

    def variable(self, source: str) -> VariableImages:
        data = np.memmap(self.path / f"{source}.images.bin", dtype=np.uint8, mode="r")
        return VariableImages(data, np.load(self.path / f"{source}.index.npy"), int(self.meta["channels"]))

    def skipped(self, source: str) -> tuple[str, ...]:
        return tuple(self.meta["bad"].get(source, {}))


def open_store(path: Path) -> Store:
    return Store(path, json.loads((path / "meta.json").read_text()))


def store_gib(images: int, side: int, channels: int, aspect: float = 4 / 3) -> float:
    """GiB of a raw store of `images` at shorter side `side` (ImageNet's mean aspect is ~4:3)."""
    return images * channels * side * math.ceil(side * aspect) / 2**30
