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

Writing a store (decoding in `workers` processes, atomically): `store_write`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compmod.data.datasets.decode_cache import cache_dir, fingerprint, readonly_tensor

STORE_VERSION = 1
CENTRE_CROP = 0.875  # the evaluation view: shorter side to size / 0.875, then the centre size x size
VARIABLE_SOURCES = ("train",)  # sources whose images are also stored at their own aspect ratio


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
