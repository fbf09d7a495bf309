"""Generic image folders (ImageFolder layout, or flat folders for pretraining); PIL decodes them.

Layout, under the dataset folder (``data.root``)::

    train/<class>/**/*.png|jpg|...   labelled train images (or <class>/ directly under the root)
    test/<class>/... or val/<class>/ optional; without it a seeded, stratified held-out fraction
                                     of train is the test split and train/pretrain use the rest
    *.png or train/*.png             flat, unlabelled images: only the "pretrain" split exists

Sizes: with ``image_size`` every image is resized to image_size x image_size. Without it, the most
common (width, height) over all images of the dataset (train and test, so both splits agree; ties go
to the size met first in sorted path order) is used and other images are resized to it.
Channels: grey files (modes 1, L, LA, I, I;16, F) give 1 channel, colour files 3; a mix gives 3,
unless ``channels`` says otherwise. Alpha is dropped.
Unreadable files (corrupt, truncated, empty): ``on_bad_image="fail"`` stops with a `DataError` naming
the file; ``"skip"`` leaves them out of the split with their labels, logs each one and a summary on the
``compmod.data`` logger, and lists them in `RawSplit.skipped`. Files whose header cannot be read do not
count towards the most common size. The held-out draw is made over all files first, so which files are
unreadable never changes which good files are held out.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from compmod.data.datasets.base import LoadOptions, RawSplit, not_found, register_dataset
from compmod.data.datasets.holdout import holdout_mask
from compmod.errors import ConfigError, DataError, DatasetNotFoundError

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
SKIP_HINT = "set data.on_bad_image=skip to skip unreadable images"
_SHOWN = 5  # file names listed in the summary of skipped images
_log = logging.getLogger("compmod.data")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def images_in(folder: Path, recursive: bool) -> list[Path]:
    """Sorted image files in `folder` (and its sub-folders when `recursive`). Symbolic links to folders
    are followed, each real folder at most once: a link to a folder already walked or to one of
    `folder`'s parents (a loop) or a second link to the same folder adds nothing, so every image is read
    once and a loop neither hangs nor repeats images."""
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p.name))
    found = []
    visited = {_identity(p) for p in folder.resolve().parents}  # a link up to them would be a loop
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in visited:  # reached again through a link: its files are counted
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        dirnames[:] = [d for d in sorted(dirnames) if not d.startswith(".")]
        found += [Path(dirpath) / f for f in filenames if _is_image(f)]
    return sorted(found)


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def class_folders(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image paths, for every sub-folder of `folder` holding images."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    per_class = {d.name: images_in(d, recursive=True) for d in subdirs}
    return {c: files for c, files in per_class.items() if files}


def _find_root(paths: list[Path]) -> Path:
    for folder in paths:
        if folder.is_dir() and ((folder / "train").is_dir() or images_in(folder, recursive=True)):
            return folder
    raise not_found("folder", paths, "no folder holds images")


def labelled_files(per_class: dict[str, list[Path]], classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files: list[Path] = []
    labels: list[int] = []
    for label, c in enumerate(classes):
        files += per_class.get(c, [])
        labels += [label] * len(per_class.get(c, []))
    return files, np.asarray(labels, dtype=np.int64)


def unreadable_reason(path: Path, e: BaseException) -> str:
    """Why `path` cannot be read: the decoder's message on one line (the exception's type when it has
    none), or "empty file" for a 0-byte file, of which PIL only says that it cannot identify it."""
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    return " ".join(str(e).split()) or type(e).__name__


def note_bad_image(
    path: Path, e: BaseException, skip: bool, bad: dict[Path, str], action: str = "decode"
) -> None:
    """Apply the ``on_bad_image`` policy to `path`, which raised `e` on `action` ("read" for its header,
    "decode"): under `skip` record the reason in `bad`, else raise the `DataError` naming the file."""
    if not skip:
        raise DataError(f"cannot {action} image {path}: {unreadable_reason(path, e)}; {SKIP_HINT}") from None
    bad[path] = unreadable_reason(path, e)


def _choose_format(
    files: list[Path], image_size: int | None, channels: int | None, skip: bool
) -> tuple[tuple[int, int], int, dict[Path, str]]:
    """(width, height) and channel count of the output, reading only file headers when needed, and
    {file whose header cannot be read: reason}. Without `skip` the first such file raises instead."""
    sizes: Counter[tuple[int, int]] = Counter()
    grey = True
    bad: dict[Path, str] = {}
    if image_size is None or channels is None:
        for path in files:
            try:
                with Image.open(path) as img:
                    img_size, img_mode = img.size, img.mode
            except DECODE_ERRORS as e:
                note_bad_image(path, e, skip, bad, "read")
                continue
            sizes[img_size] += 1
            grey = grey and img_mode in _GREY_MODES
    if image_size is not None:
        size = (image_size, image_size)
    else:  # (1, 1) when every file was skipped: nothing is decoded and the caller reports them all
        size = sizes.most_common(1)[0][0] if sizes else (1, 1)
    return size, channels if channels is not None else (1 if grey else 3), bad


def decode_image(path: Path, size: tuple[int, int] | None, mode: str) -> np.ndarray:
    """One file as uint8 (H, W) for mode "L" or (H, W, 3) for "RGB", resized to `size` = (W, H) (None:
    its own size).

    A corrupt, truncated or empty file raises one of `DECODE_ERRORS`. A truncated file passes
    `Image.open` (it reads the header only) and fails in `img.load()`, because PIL's
    `ImageFile.LOAD_TRUNCATED_IMAGES` is left False: PIL would otherwise pad the image with grey.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # 16-bit / float grey -> 8 bit
            arr = np.asarray(img, dtype=np.float64)
            if img.mode.startswith("I;16") or arr.max() > 255:
                arr = arr / 257.0
            img = Image.fromarray(np.clip(arr.round(), 0, 255).astype(np.uint8))
        elif img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")
        img = img.convert(mode)
        if size is not None and img.size != size:
            img = img.resize(size, Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _decode_all(
    files: list[Path], size: tuple[int, int], channels: int, skip: bool
) -> tuple[torch.Tensor, list[int], dict[Path, str]]:
    """uint8 (n, C, H, W) of the decodable `files`, their indices in `files`, and {file that cannot be
    decoded: reason}. Without `skip` the first such file raises a `DataError` instead."""
    out = np.empty((len(files), size[1], size[0], channels), dtype=np.uint8)
    mode = "L" if channels == 1 else "RGB"
    decoded: list[int] = []
    bad: dict[Path, str] = {}
    for i, path in enumerate(files):
        try:
            arr = decode_image(path, size, mode)
        except DECODE_ERRORS as e:
            note_bad_image(path, e, skip, bad)
            continue
        out[len(decoded)] = arr.reshape(size[1], size[0], channels)
        decoded.append(i)
    images = torch.from_numpy(out[: len(decoded)]).permute(0, 3, 1, 2).contiguous()
    return images, decoded, bad


def report_skipped(root: Path, split: str, files: list[Path], bad: dict[Path, str]) -> None:
    """Log each skipped file of the split and a summary; a `DataError` when no image is left."""
    for path, reason in bad.items():
        _log.warning("skipping unreadable image %s: %s", path, reason)
    shown = ", ".join(os.path.relpath(p, root) for p in list(bad)[:_SHOWN])
    more = f", ... ({len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
    if len(bad) == len(files):
        first, reason = next(iter(bad.items()))
        raise DataError(
            f"all {len(files)} images of split {split!r} in {root} are unreadable ({shown}{more}); "
            f"first: {first}: {reason}"
        )
    _log.warning(
        "skipped %d of %d images of split %r in %s: %s%s", len(bad), len(files), split, root, shown, more
    )


def _split_files(
    split: str, root: Path, holdout_fraction: float, seed: int
) -> tuple[list[Path], np.ndarray, list[str], list[Path]]:
    """(files of `split`, their labels, class names, every file of the dataset)."""
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    per_class = class_folders(train_dir)
    classes = list(per_class)
    if not classes:
        flat = images_in(train_dir, recursive=False)
        if not flat:
            raise DatasetNotFoundError(f"folder dataset {root}: no images in {train_dir} or its sub-folders")
        if split != "pretrain":
            raise DatasetNotFoundError(
                f"folder dataset {root} has only flat, unlabelled images in {train_dir}, which serve split "
                f"'pretrain' only; split {split!r} needs labelled class folders {train_dir}/<class>/*.png"
            )
        return flat, np.full(len(flat), -1, dtype=np.int64), [], flat
    files, labels = labelled_files(per_class, classes)
    if test_dir is not None:
        test_per_class = class_folders(test_dir)
        unknown = sorted(set(test_per_class) - set(classes))
        if unknown:
            raise DataError(f"class folders {unknown} in {test_dir} do not exist in {train_dir} ({classes})")
        test_files, test_labels = labelled_files(test_per_class, classes)
        if split == "test" and not test_files:
            raise DatasetNotFoundError(
                f"folder dataset {root}: {test_dir} has no class folders with images; "
                f"split 'test' needs {test_dir}/<class>/*.png with the class names of {train_dir}"
            )
        if split == "test":
            return test_files, test_labels, classes, files + test_files
        return files, labels, classes, files + test_files
    if split == "test" and holdout_fraction <= 0:
        raise ConfigError(
            f"folder dataset {root} has no test/ or val/ folder and data.holdout_fraction is "
            f"{holdout_fraction}; set it in (0, 1) to hold out part of {train_dir} as the test split"
        )
    held = holdout_mask(labels, holdout_fraction, seed)
    keep = held if split == "test" else ~held
    return [f for f, k in zip(files, keep, strict=True) if k], labels[keep], classes, files


@register_dataset(
    "folder",
    hint="put images into <root>/train/<class>/*.png (optionally <root>/test/<class>/ or "
    "<root>/val/<class>/), or flat images into <root>/ for pretraining only, and set data.root to <root>",
)
def load_folder(
    split: str,
    paths: list[Path],
    options: LoadOptions,
) -> RawSplit:
    """Decode one split of an image folder to (N, C, H, W) uint8 (see the module docstring for rules)."""
    root = _find_root(paths)
    files, labels, classes, all_files = _split_files(split, root, options.holdout_fraction, options.seed)
    skip = options.on_bad_image == "skip"
    size, n_channels, bad_headers = _choose_format(all_files, options.image_size, options.channels, skip)
    readable = [i for i, f in enumerate(files) if f not in bad_headers]
    images, decoded, bad_data = _decode_all([files[i] for i in readable], size, n_channels, skip)
    found = {**bad_headers, **bad_data}
    bad = {f: found[f] for f in files if f in found}  # in file order; other splits' files left out
    if bad:
        report_skipped(root, split, files, bad)
    keep = [readable[j] for j in decoded]
    return RawSplit(images, torch.from_numpy(labels[keep]), classes, tuple(str(p) for p in bad))
