"""ImageNet (ILSVRC2012, Russakovsky et al. 2015) and ImageNet-100 (CMC, Tian et al. 2019) in the
ImageFolder layout, decoded once to ``data.image_size`` and cached on disk (see `jpeg`).

Layout, under the dataset folder::

    train/<wnid>/*.JPEG   1.28M images, 1000 classes (the extracted ILSVRC2012_img_train.tar)
    val/<wnid>/*.JPEG     50k images: ILSVRC2012_img_val.tar re-foldered by class (e.g. valprep.sh)

Splits: pretrain = train = train/, test = val/. Labels: imagenet indexes the sorted class folders of
train/ (as torchvision's ImageFolder); imagenet100 the sorted 100 WordNet ids of
``imagenet100_classes.txt``, which are the class folders ImageFolder finds in a 100-class copy. imagenet100
reads them from a full ImageNet folder or one holding only those classes; other folders are ignored.

``data.image_size`` is required. Both folders are decoded once into a prepared store (`store`: train
images at their own aspect ratio, shorter side ``data.store_side``, for the training crops; every image's
evaluation view, resize to image_size / 0.875 and centre crop image_size), by `compmod prepare-data`
ahead of a run, or by a single-process run that finds none; under torchrun a missing store is an error.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from compmod.data.datasets.base import LoadOptions, RawSplit, not_found, register_dataset
from compmod.data.datasets.folder import SKIP_HINT, class_folders, images_in, labelled_files, report_skipped
from compmod.data.datasets.store import Source, StoreSpec, default_side, open_store, store_path
from compmod.data.datasets.store_write import prepare_store
from compmod.errors import ConfigError, DataError, DatasetNotFoundError

PREPARED_DATASETS = ("imagenet", "imagenet100")  # read through a prepared store
IMAGENET100_FILE = Path(__file__).with_name("imagenet100_classes.txt")
_REFOLDER = (
    "re-folder the validation images into val/<wnid>/ (e.g. with valprep.sh of "
    "github.com/soumith/imagenetloader.torch, or from LOC_val_solution.csv of the Kaggle release)"
)
_IMAGENET_HINT = (
    "ImageNet is never downloaded: get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
    f"https://image-net.org/download-images, extract the train tars into train/<wnid>/ and {_REFOLDER}"
)
_log = logging.getLogger("compmod.data")


@functools.cache
def imagenet100_classes() -> tuple[str, ...]:
    """The 100 WordNet ids of ImageNet-100, sorted (the label order), from ``imagenet100_classes.txt``."""
    lines = IMAGENET100_FILE.read_text().splitlines()
    wnids = sorted(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    if len(wnids) != 100 or len(set(wnids)) != 100:
        raise DataError(f"{IMAGENET100_FILE} must list 100 distinct WordNet ids, found {len(wnids)}")
    return tuple(wnids)


def required_size(name: str, options: LoadOptions) -> int:
    """``options.image_size``, or a `ConfigError` naming ``data.image_size`` when it is None."""
    if options.image_size is None:
        raise ConfigError(
            f"dataset {name!r} needs data.image_size: ImageNet decoded at full size does not fit in "
            "memory; set e.g. data.image_size=64, 112 or 224"
        )
    return options.image_size


def _find_root(name: str, paths: list[Path]) -> Path:
    for folder in paths:
        if (folder / "train").is_dir() or (folder / "val").is_dir():
            return folder
    raise not_found(name, paths, "no folder holds train/<wnid>/ or val/<wnid>/")


def _subdir_names(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders (class folders are named without reading their files)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _per_class(name: str, folder: Path, wanted: list[str] | None) -> dict[str, list[Path]]:
    """{class: image files} under `folder` (only the `wanted` classes present, if given)."""
    if not folder.is_dir():
        raise DatasetNotFoundError(f"dataset {name!r}: missing {folder}; {_IMAGENET_HINT}")
    if wanted is None:
        per_class = class_folders(folder)
    else:
        per_class = {c: images_in(folder / c, recursive=True) for c in wanted if (folder / c).is_dir()}
        per_class = {c: files for c, files in per_class.items() if files}
    if not per_class:
        flat = images_in(folder, recursive=False)
        if flat:
            raise DataError(f"{folder} holds {len(flat)} images but no class folders; {_REFOLDER}")
        which = "of the 100 ImageNet-100 classes " if wanted is not None else ""
        raise DatasetNotFoundError(f"dataset {name!r}: no class folders {which}with images in {folder}")
    return per_class


def _sources(name: str, root: Path, subset: bool) -> tuple[dict[str, Source], list[str]]:
    """({source folder present: its files and labels}, class names)."""
    if subset:
        classes = list(imagenet100_classes())
    else:  # class names from train/ (or val/ when only val/ is there), without listing their files
        classes = _subdir_names(root / "train" if (root / "train").is_dir() else root / "val")
    sources = {}
    for source in ("train", "val"):
        if not (root / source).is_dir():
            continue
        per_class = _per_class(name, root / source, classes if subset else None)
        unknown = sorted(set(per_class) - set(classes))
        if unknown:
            raise DataError(
                f"class folders {unknown[:5]} in {root / source} do not exist in {root / 'train'}"
            )
        missing = [c for c in classes if c not in per_class]
        if subset and missing:
            _log.warning(
                "%s: %d of the 100 classes have no images in %s (%s%s); labels still index all 100",
                name, len(missing), root / source, ", ".join(missing[:5]), ", ..." * (len(missing) > 5),
            )  # fmt: skip
        files, labels = labelled_files(per_class, classes)
        sources[source] = Source(files, labels)
    return sources, classes


def _load(name: str, split: str, paths: list[Path], options: LoadOptions, subset: bool) -> RawSplit:
    size = required_size(name, options)
    root = _find_root(name, paths)
    source = "val" if split == "test" else "train"
    if not (root / source).is_dir():
        raise DatasetNotFoundError(f"dataset {name!r}: missing {root / source}; {_IMAGENET_HINT}")
    sources, classes = _sources(name, root, subset)
    folder = Path(options.store_dir).expanduser() if options.store_dir else None
    spec = StoreSpec(
        name, root, options.store_side or default_side(size), size, options.channels or 3, folder
    )
    path = store_path(spec, sources)
    if not (path / "meta.json").is_file():
        if not options.prepare:
            raise DataError(
                f"no prepared store of {name!r} ({root}) at {path}: no rank decodes under torchrun; run "
                "`compmod prepare-data` with this run's config (and --set) first"
            )
        _log.info(
            "preparing %s from %s into %s (once; `compmod prepare-data` does it ahead)", name, root, path
        )
        prepare_store(spec, sources, classes, options.on_bad_image == "skip", options.workers)
    store = open_store(path)
    skipped = store.skipped(source)
    if skipped and options.on_bad_image != "skip":  # prepared under "skip": still fails under "fail"
        first = skipped[0]
        raise DataError(f"cannot decode image {first}: {store.meta['bad'][source][first]}; {SKIP_HINT}")
    if skipped:
        report_skipped(
            root, split, sources[source].files, {Path(p): r for p, r in store.meta["bad"][source].items()}
        )
    images, labels = store.eval_view(source)
    variable = store.variable(source) if split == "pretrain" else None
    return RawSplit(images, labels, store.classes, skipped, variable)


@register_dataset("imagenet", hint=_IMAGENET_HINT, subdirs=("ILSVRC2012",))
def load_imagenet(split: str, paths: list[Path], options: LoadOptions) -> RawSplit:
    """ILSVRC2012: 1.28M train / 50k val colour images, 1000 classes, at (N, C, image_size, image_size)."""
    return _load("imagenet", split, paths, options, subset=False)


@register_dataset(
    "imagenet100",
    hint="ImageNet-100 is the 100 classes of imagenet100_classes.txt (CMC's imagenet100.txt) taken from "
    "ImageNet, which is never downloaded: point data.root at a full ImageNet folder or at one holding only "
    f"those classes, as train/<wnid>/*.JPEG and val/<wnid>/*.JPEG. {_IMAGENET_HINT}",
    standard_paths=("./data/imagenet", "~/.cache/compmod/imagenet"),
)
def load_imagenet100(split: str, paths: list[Path], options: LoadOptions) -> RawSplit:
    """ImageNet-100: the CMC subset, ~126k train / 5k val images, 100 classes, labels in sorted wnid order."""
    return _load("imagenet100", split, paths, options, subset=True)
