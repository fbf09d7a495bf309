"""Tiny ImageNet (CS231n, Le & Yang 2015): 200 classes of 64x64 JPEGs, in its release layout.

Layout, under ``tiny-imagenet-200/``::

    wnids.txt                  the 200 WordNet ids, one a line: label i is line i
    words.txt                  optional: "<wnid>\\t<names>" for every WordNet id; names the classes
    train/<wnid>/images/*.JPEG 500 labelled images per class
    val/images/*.JPEG          10k images, labelled by
    val/val_annotations.txt    "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per line
    test/images/*.JPEG         unlabelled, and ignored

Splits: pretrain = train = train/, test = val/ (in the order of val_annotations.txt). Images are decoded
at 64x64 (``data.image_size`` if set; a file of another size is resized) and cached as `jpeg` describes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compmod.data.datasets.base import LoadOptions, RawSplit, find_dataset_dir, register_dataset, require_file
from compmod.data.datasets.decode_cache import decoded_split
from compmod.data.datasets.folder import images_in
from compmod.errors import DataError, DatasetNotFoundError

NATIVE_SIZE = 64
_NAME = "tiny_imagenet"
_HINT = (
    "download tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip and extract it "
    "into one of those folders"
)


def read_wnids(path: Path) -> list[str]:
    """The WordNet ids of ``wnids.txt`` in file order (the label order)."""
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"{path} must list distinct WordNet ids, one a line; found {len(wnids)} lines")
    return wnids


def class_names(folder: Path, wnids: list[str]) -> list[str]:
    """The ``words.txt`` entry of each wnid ("goldfish, Carassius auratus"), the wnid where it has none."""
    path = folder / "words.txt"
    if not path.is_file():
        return list(wnids)
    words: dict[str, str] = {}
    for line in path.read_text().splitlines():
        wnid, _, names = line.partition("\t")
        words[wnid.strip()] = names.strip()
    return [words.get(w) or w for w in wnids]


def _train_files(folder: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise DatasetNotFoundError(
                f"dataset {_NAME!r} in {folder} is incomplete: missing {images} for class {wnid} of "
                f"wnids.txt; {_HINT}"
            )
        found = images_in(images, recursive=False)
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _val_files(folder: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    """Files and labels of val_annotations.txt, in its order; a listed file that is missing is reported
    as unreadable when decoded (``on_bad_image``)."""
    path = require_file(_NAME, folder / "val", ["val_annotations.txt"])
    index = {w: i for i, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 2 or fields[1].strip() not in index:
            raise DataError(f"{path}:{lineno}: expected '<file>\\t<wnid of wnids.txt>\\t...', got {line!r}")
        files.append(folder / "val" / "images" / fields[0].strip())
        labels.append(index[fields[1].strip()])
    if not files:
        raise DataError(f"{path} lists no validation images")
    return files, np.asarray(labels, dtype=np.int64)


@register_dataset(
    _NAME, hint=_HINT, subdirs=("tiny-imagenet-200",), standard_paths=("./data/tiny-imagenet-200",)
)
def load_tiny_imagenet(split: str, paths: list[Path], options: LoadOptions) -> RawSplit:
    """100k train / 10k val colour images, (N, 3, 64, 64) uint8, 200 classes in wnids.txt order."""
    folder = find_dataset_dir(_NAME, paths, ["wnids.txt"])
    wnids = read_wnids(folder / "wnids.txt")
    source = "val" if split == "test" else "train"
    files, labels = _val_files(folder, wnids) if source == "val" else _train_files(folder, wnids)
    if not files:
        raise DatasetNotFoundError(f"dataset {_NAME!r} in {folder}: no images in train/<wnid>/images/")
    size = options.image_size or NATIVE_SIZE
    channels = options.channels or 3
    images, kept, skipped = decoded_split(
        _NAME, split, source, folder, files, size, channels, options.on_bad_image
    )
    return RawSplit(images, torch.from_numpy(labels[kept]), class_names(folder, wnids), skipped)
