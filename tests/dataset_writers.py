"""Writers of tiny dataset copies in their real on-disk formats, shared by the data tests and the paper-preset
smoke tests: CIFAR pickles, STL-10 binaries, the tiny-imagenet-200 layout and ImageNet train/val folders of
JPEGs (written with PIL)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]  # class i has colour i
TINY_WNIDS = ["n03", "n01", "n02"]  # wnids.txt order, not sorted: labels follow it
TINY_VAL = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n03"), ("val_2.JPEG", "n01"), ("val_3.JPEG", "n02")]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


# ----------------------------------------------------------------------------- CIFAR
def cifar_batch(rng: np.random.Generator, n: int, label_key: bytes, num_classes: int) -> dict:
    """One CIFAR batch dict (random pixels, rows of 3072 bytes: R, G, B planes) as the pickles hold it."""
    return {
        b"batch_label": b"batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(x) for x in rng.integers(0, num_classes, n)],
        b"filenames": [b"x.png"] * n,
    }


def dump_pickle(obj: object, path: Path, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar100(root: Path, n_train: int = 16, n_test: int = 4, seed: int = 1) -> Path:
    """`root/cifar-100-python` with train, test and meta pickles (fine and coarse labels); returns root."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, n in [("train", n_train), ("test", n_test)]:
        batch = cifar_batch(rng, n, b"fine_labels", 100)
        batch[b"coarse_labels"] = [label // 5 for label in batch[b"fine_labels"]]
        dump_pickle(batch, folder / split)
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []}
    dump_pickle(meta, folder / "meta")
    return root


# ----------------------------------------------------------------------------- STL-10
def write_stl(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray | None) -> None:
    """`<prefix>_X.bin` (and `<prefix>_y.bin`, labels 1-10) from (N, 3, 96, 96) uint8 images."""
    # Binary format: per image, per channel, column-major -> raw[n, c, w, h] = image[n, c, h, w].
    (folder / f"{prefix}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
    if labels is not None:
        (folder / f"{prefix}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())


def write_stl10(root: Path, n_train: int = 8, n_test: int = 4, n_unlabeled: int = 8, seed: int = 2) -> Path:
    """`root/stl10_binary` with train, test and unlabeled binaries and class_names.txt; returns root."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for prefix, n in [("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)]:
        labels = None if prefix == "unlabeled" else rng.integers(0, 10, n)
        write_stl(folder, prefix, rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8), labels)
    (folder / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return root


# ----------------------------------------------------------------------------- JPEG layouts
def write_jpeg(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (24, 20)) -> Path:
    """A constant-colour JPEG of `size` (width, height) at `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG", quality=95)
    return path


def write_tiny_imagenet(root: Path, n_train: int = 3) -> Path:
    """`root/tiny-imagenet-200` with the classes TINY_WNIDS x `n_train` train images, the 4 TINY_VAL val
    images, a test image and a words.txt naming two of the classes; returns that folder."""
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (folder / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\nn03\tEgyptian cat\n")
    for label, wnid in enumerate(TINY_WNIDS):
        for i in range(n_train):
            write_jpeg(folder / f"train/{wnid}/images/{wnid}_{i}.JPEG", COLOURS[label])
        (folder / f"train/{wnid}/{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
    for name, wnid in TINY_VAL:
        write_jpeg(folder / "val/images" / name, COLOURS[TINY_WNIDS.index(wnid)])
    (folder / "val/val_annotations.txt").write_text("".join(f"{n}\t{w}\t0\t0\t63\t63\n" for n, w in TINY_VAL))
    write_jpeg(folder / "test/images/test_0.JPEG", COLOURS[3])
    return folder


def write_imagenet(root: Path, classes: list[str], n_train: int = 3, n_val: int = 1) -> Path:
    """ImageNet's train/<wnid>/ and val/<wnid>/ JPEGs under `root`, class i in colour i; returns root."""
    for label, wnid in enumerate(classes):
        for i in range(n_train):
            write_jpeg(root / f"train/{wnid}/{wnid}_{i}.JPEG", COLOURS[label])
        for i in range(n_val):
            write_jpeg(root / f"val/{wnid}/ILSVRC2012_val_{label}{i}.JPEG", COLOURS[label])
    return root
