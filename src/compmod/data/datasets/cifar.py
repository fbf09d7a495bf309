"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the "python version" pickle batches.

The batches are pickles; they are read by an unpickler that only reconstructs numpy arrays, so a
malicious file raises `DataError` instead of running code.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compmod.data.datasets.base import LoadOptions, RawSplit, find_dataset_dir, register_dataset, require_file
from compmod.errors import DataError

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# (module suffix under numpy._core / numpy.core, name) that array pickles need; nothing else is allowed.
_NUMPY_GLOBALS = {
    ("multiarray", "_reconstruct"),
    ("multiarray", "scalar"),
    ("numeric", "_frombuffer"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` resolves only numpy array helpers (and latin-1 bytes decoding)."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module == "_codecs" and name == "encode":  # bytes pickled by Python 3 at protocol 2
            import codecs

            return codecs.encode
        for prefix in ("numpy._core.", "numpy.core."):
            if module.startswith(prefix) and (module[len(prefix) :], name) in _NUMPY_GLOBALS:
                return _numpy_attr(module[len(prefix) :], name)
        raise DataError(
            f"refusing to unpickle {module}.{name} from {self.path}: CIFAR batches may only hold "
            f"dicts, lists and numpy arrays (the file is corrupt or not a CIFAR batch)"
        )


def _numpy_attr(submodule: str, name: str) -> Any:
    try:  # numpy >= 2 moved numpy.core to numpy._core; importing numpy.core warns there
        mod = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        mod = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(mod, name)


def load_batch(path: Path) -> dict[Any, Any]:
    """Unpickle one CIFAR batch or meta file with the array-only unpickler.

    Raises:
        DataError: the file is not a pickled dict or asks for anything but numpy arrays.
    """
    try:
        with open(path, "rb") as f:
            obj = _ArrayOnlyUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as e:  # truncated or garbage pickles raise many kinds of errors
        raise DataError(f"cannot unpickle {path}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a CIFAR batch dict")
    return obj


def _field(batch: dict[Any, Any], key: str, path: Path) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise DataError(f"{path} has no {key!r} entry (keys: {', '.join(map(repr, batch))})")


def _read_batches(files: list[Path], label_key: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path in files:
        batch = load_batch(path)
        data = np.asarray(_field(batch, "data", path))
        y = np.asarray(_field(batch, label_key, path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
        if y.shape != (data.shape[0],) or (y.size and (y.min() < 0 or y.max() >= num_classes)):
            raise DataError(f"{path}: {label_key!r} must be {data.shape[0]} labels in 0..{num_classes - 1}")
        # Each row is the R, G, B planes of a 32x32 image, each plane row-major.
        images.append(torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32))))
        labels.append(torch.from_numpy(y))
    return torch.cat(images), torch.cat(labels)


def _class_names(meta_path: Path, key: str) -> list[str]:
    names = _field(load_batch(meta_path), key, meta_path)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _load_cifar(
    name: str,
    split: str,
    paths: list[Path],
    files: dict[str, list[str]],
    label_key: str,
    meta: tuple[str, str],
) -> RawSplit:
    folder = find_dataset_dir(name, paths, files["train"][:1] + files["test"])
    meta_file, names_key = meta
    classes = _class_names(require_file(name, folder, [meta_file]), names_key)
    wanted = files["test" if split == "test" else "train"]
    images, labels = _read_batches([require_file(name, folder, [f]) for f in wanted], label_key, len(classes))
    return RawSplit(images, labels, classes)


@register_dataset(
    "cifar10",
    hint=f"download cifar-10-python.tar.gz from {_CIFAR_URL} and extract it into one of those folders",
    subdirs=("cifar-10-batches-py",),
    standard_paths=("./data/cifar-10-batches-py",),
)
def load_cifar10(
    split: str,
    paths: list[Path],
    options: LoadOptions,
) -> RawSplit:
    """50k train / 10k test colour images, (N, 3, 32, 32) uint8, 10 classes; pretrain is train."""
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    return _load_cifar("cifar10", split, paths, files, "labels", ("batches.meta", "label_names"))


@register_dataset(
    "cifar100",
    hint=f"download cifar-100-python.tar.gz from {_CIFAR_URL} and extract it into one of those folders",
    subdirs=("cifar-100-python",),
    standard_paths=("./data/cifar-100-python",),
)
def load_cifar100(
    split: str,
    paths: list[Path],
    options: LoadOptions,
) -> RawSplit:
    """50k train / 10k test colour images, (N, 3, 32, 32) uint8, 100 fine classes; pretrain is train."""
    files = {"train": ["train"], "test": ["test"]}
    return _load_cifar("cifar100", split, paths, files, "fine_labels", ("meta", "fine_label_names"))
