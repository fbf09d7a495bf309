"""The dataset record, the loader registry and where each dataset is looked for on disk."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import torch

from compmod.errors import DatasetNotFoundError
from compmod.registry import Registry

if TYPE_CHECKING:  # the store's module imports this one
    from compmod.data.datasets.store import VariableImages

SPLITS: tuple[str, ...] = ("pretrain", "train", "test")
"""pretrain: images for self-supervised pretraining (labels may be -1); train: labelled train split
(kNN memory bank, linear probe); test: evaluation."""

BAD_IMAGE_POLICIES: tuple[str, ...] = ("fail", "skip")
"""What to do with an image file that cannot be decoded: stop with a `DataError`, or skip it (VISSL's
policy for corrupt images). Applies to datasets read one file per image (`folder`)."""


@dataclass
class ImageDataset:
    """A whole split held in memory as one uint8 tensor.

    Attributes:
        images: uint8 (N, C, H, W), contiguous, on the CPU.
        labels: int64 (N,); -1 marks an unlabelled image.
        classes: class names; ``classes[label]`` names a label.
        mean: per-channel mean of ``images / 255`` (C values).
        std: per-channel standard deviation of ``images / 255`` (C values, never below 1/255).
        name: the registry name of the dataset.
        skipped: paths of the unreadable image files left out under ``on_bad_image="skip"`` (empty
            otherwise, and for datasets stored as arrays rather than one file per image).
        variable: for the pretrain split of a prepared store (ImageNet), the same images at their own
            aspect ratio, from which training crops are taken; `images` then holds their evaluation view.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    skipped: tuple[str, ...] = ()
    variable: VariableImages | None = None  # the pretrain images at their own sizes (a prepared store)

    def __len__(self) -> int:
        return int(self.images.shape[0])


class RawSplit(NamedTuple):
    """What a loader returns: images (N, C, H, W) uint8, labels (N,) int64, class names, the paths
    of the image files it skipped as unreadable (``on_bad_image="skip"``), and for the pretrain split of
    a prepared store the same images at their own sizes (`store.VariableImages`), for training crops."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    skipped: tuple[str, ...] = ()
    variable: VariableImages | None = None


@dataclass(frozen=True)
class LoadOptions:
    """What `load_dataset` was asked for beyond the split. `image_size` and `channels` are hints a
    loader may apply while decoding (the folder loader does); `load_dataset` converts whatever comes
    back, so other loaders return native images. `holdout_fraction`/`seed`: folders without a test split.
    `store_side`, `store_dir`, `prepare`, `workers`: prepared stores (`store`).
    `on_bad_image`: what a loader reading one file per image does with a file it cannot decode, "fail"
    (a `DataError`) or "skip" (leave it out, log it, list it in `RawSplit.skipped`); see
    `BAD_IMAGE_POLICIES`."""

    image_size: int | None = None
    channels: int | None = None
    holdout_fraction: float = 0.1
    seed: int = 0
    on_bad_image: str = "fail"
    store_side: int | None = None  # prepared stores: the stored shorter side (None: image_size / 0.875)
    store_dir: str | None = None  # where prepared stores live (None: next to the decode cache)
    prepare: bool = True  # decode a missing store now (False under torchrun: an error naming the command)
    workers: int = 1  # processes decoding a store


class Loader(Protocol):
    """A registered loader: reads one split from the first matching folder in `paths`."""

    def __call__(self, split: str, paths: list[Path], options: LoadOptions) -> RawSplit: ...


DATASETS: Registry[Loader] = Registry("dataset")


@dataclass(frozen=True)
class _Layout:
    subdirs: tuple[str, ...]
    standard_paths: tuple[str, ...]
    hint: str


_LAYOUTS: dict[str, _Layout] = {}


def register_dataset(
    name: str, *, hint: str, subdirs: Sequence[str] = (), standard_paths: Sequence[str] = ()
) -> Callable[[Loader], Loader]:
    """Register a loader in `DATASETS` together with where its files usually live.

    Args:
        name: registry name (``load_dataset(name, ...)``).
        hint: how to obtain the data, one sentence (ends the "not found" message).
        subdirs: standard sub-folders tried below every base folder (e.g. ``cifar-10-batches-py``).
        standard_paths: dataset-specific places searched last (``./`` is the working directory).
    """

    def deco(fn: Loader) -> Loader:
        _LAYOUTS[name] = _Layout(tuple(subdirs), tuple(standard_paths), hint)
        return DATASETS.register(name)(fn)

    return deco


def dataset_search_paths(name: str, root: str | None) -> list[Path]:
    """Folders searched for dataset `name`, in order (absolute paths, duplicates removed).

    With `root`: only root and root/<standard sub-folder>. Without: ``$COMPMOD_DATA_DIR/<name>`` (if
    set), ``./data/<name>``, ``~/.cache/compmod/<name>`` (each also with the standard sub-folders),
    then the dataset's standard places (e.g. ``/usr/share/datasets/fashion-mnist``).
    """
    DATASETS.get(name)  # an unknown name raises the registry's did-you-mean ConfigError
    layout = _LAYOUTS[name]
    if root is not None:
        bases, extra = [Path(root)], []
    else:
        env = os.environ.get("COMPMOD_DATA_DIR")
        bases = [Path(env) / name] if env else []
        bases += [Path("data") / name, Path("~/.cache/compmod") / name]
        extra = [Path(p) for p in layout.standard_paths]
    found: list[Path] = []
    for base in bases:
        found += [base, *(base / sub for sub in layout.subdirs)]
    found += extra
    absolute = [p.expanduser().absolute() for p in found]
    return list(dict.fromkeys(absolute))


def not_found(name: str, paths: list[Path], what: str = "") -> DatasetNotFoundError:
    """The one-line "not found" error: what was missing, every folder searched, and how to get it."""
    missing = f" ({what})" if what else ""
    return DatasetNotFoundError(
        f"dataset {name!r} not found{missing}; searched: {', '.join(str(p) for p in paths)}; "
        f"{_LAYOUTS[name].hint} (or point data.root at the folder holding it)"
    )


def find_dataset_dir(name: str, paths: list[Path], markers: Sequence[str]) -> Path:
    """First folder in `paths` holding any of the `markers` files, else a `DatasetNotFoundError`."""
    for folder in paths:
        if any((folder / m).is_file() for m in markers):
            return folder
    raise not_found(name, paths, f"no folder holds {' or '.join(markers)}")


def require_file(name: str, folder: Path, candidates: Sequence[str]) -> Path:
    """The first of `candidates` present in `folder`, else a `DatasetNotFoundError` naming them."""
    for c in candidates:
        if (folder / c).is_file():
            return folder / c
    raise DatasetNotFoundError(
        f"dataset {name!r} in {folder} is incomplete: missing {' or '.join(candidates)}; "
        f"{_LAYOUTS[name].hint}"
    )
