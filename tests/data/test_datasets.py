"""Tests of the dataset registry: real Fashion-MNIST files, and small files in the real CIFAR, STL-10 and
image-folder formats written to tmp_path."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.dataset_writers import cifar_batch, dump_pickle, write_stl

from compmod.data.datasets import DATASETS, ImageDataset, dataset_search_paths, load_dataset
from compmod.data.datasets.convert import convert_channels, resize_images
from compmod.data.datasets.synthetic import CIFAR10_NAMES
from compmod.errors import ConfigError, DataError, DatasetNotFoundError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), reason="apt-get install dataset-fashion-mnist"
)


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- registry and arguments
def test_registry_lists_every_dataset() -> None:
    assert {"fashion_mnist", "cifar10", "cifar100", "stl10", "folder"} <= set(DATASETS.names())


def test_load_dataset_unknown_name_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean cifar10"):
        load_dataset("cifar1O", "train")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, "pretrain, train, test"),
        ({"split": "train", "channels": 2}, "channels must be 1, 3"),
        ({"split": "train", "image_size": 0}, "image_size"),
        ({"split": "train", "holdout_fraction": 1.0}, "holdout_fraction"),
    ],
)
def test_load_dataset_bad_arguments_raise_config_error(kwargs: dict, match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        load_dataset("fashion_mnist", root=str(tmp_path), **kwargs)


def test_search_paths_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COMPMOD_DATA_DIR", str(tmp_path / "env"))
    paths = dataset_search_paths("cifar10", None)
    assert paths[:6] == [
        tmp_path / "env/cifar10",
        tmp_path / "env/cifar10/cifar-10-batches-py",
        tmp_path / "data/cifar10",
        tmp_path / "data/cifar10/cifar-10-batches-py",
        tmp_path / "home/.cache/compmod/cifar10",
        tmp_path / "home/.cache/compmod/cifar10/cifar-10-batches-py",
    ]
    assert Path("/usr/share/datasets/fashion-mnist") in dataset_search_paths("fashion_mnist", None)
    # With a root, only the root and its standard sub-folder are searched.
    assert dataset_search_paths("cifar10", str(tmp_path / "r")) == [
        tmp_path / "r",
        tmp_path / "r/cifar-10-batches-py",
    ]


def test_convert_luma_matches_pil_and_resize_keeps_constants() -> None:
    rgb = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    grey = convert_channels(rgb, 1)
    pil = np.asarray(Image.fromarray(rgb[1].permute(1, 2, 0).numpy()).convert("L"))
    assert torch.equal(grey[1, 0], torch.from_numpy(pil.copy()))
    assert torch.equal(convert_channels(grey, 3), grey.expand(-1, 3, -1, -1))
    const = torch.full((3, 2, 9, 9), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(const, 4), torch.full((3, 2, 4, 4), 77, dtype=torch.uint8))


# ----------------------------------------------------------------------------- Fashion-MNIST
@pytest.fixture(scope="module")
def fmnist_train() -> ImageDataset:
    return load_dataset("fashion_mnist", "train")


@needs_fmnist
def test_fashion_mnist_real_files_shapes_labels_and_stats(fmnist_train: ImageDataset) -> None:
    ds = fmnist_train
    assert ds.images.shape == (60000, 1, 28, 28) and len(ds) == 60000
    assert ds.images.dtype == torch.uint8 and ds.images.is_contiguous() and ds.labels.dtype == torch.int64
    assert torch.equal(ds.labels.bincount(), torch.full((10,), 6000))
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and ds.name == "fashion_mnist"
    assert abs(ds.mean[0] - 0.286) < 0.01 and abs(ds.std[0] - 0.353) < 0.01
    assert torch.equal(load_dataset("fashion_mnist", "pretrain").images, ds.images)


@needs_fmnist
def test_fashion_mnist_test_split_resized_to_three_channels() -> None:
    native = load_dataset("fashion_mnist", "test")
    assert native.images.shape == (10000, 1, 28, 28) and native.labels.max() == 9
    ds = load_dataset("fashion_mnist", "test", image_size=32, channels=3)
    assert ds.images.shape == (10000, 3, 32, 32) and ds.images.is_contiguous()
    assert torch.equal(ds.images[:, 0], ds.images[:, 2]) and len(ds.mean) == 3
    ref = torch.nn.functional.interpolate(native.images[:4].float(), size=32, mode="bilinear", antialias=True)
    # The loader resizes all 10,000 images in chunks, the reference 4: the same float32 formula, but other
    # SIMD loops may round it differently (a few ulp of values <= 255, < 1e-3). So a pixel may round to the
    # other integer only where the reference lies within 1e-3 of a half-integer; everywhere else exactly.
    got, want = ds.images[:4, :1].int(), ref.round().clamp(0, 255).int()
    near_half = ((ref - ref.floor()) - 0.5).abs() < 1e-3
    assert ((got - want).abs() <= near_half.int()).all()
    assert torch.equal(ds.labels, native.labels)


def test_fashion_mnist_missing_root_names_paths_and_apt_hint(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion_mnist", "train", root=str(tmp_path / "nowhere"))
    msg = _one_line(err)
    assert str(tmp_path / "nowhere") in msg and "apt-get install dataset-fashion-mnist" in msg


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_fashion_mnist_plain_and_gzip_idx_and_bad_magic(tmp_path: Path) -> None:
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images, compress=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([2, 0, 9]), compress=True)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, compress=True)
    ds = load_dataset("fashion_mnist", "test", root=str(tmp_path))
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images)) and ds.labels.tolist() == [2, 0, 9]
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x07\x03" + bytes(20))
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", "test", root=str(tmp_path))
    assert str(tmp_path / "t10k-images-idx3-ubyte") in _one_line(err)


def test_fashion_mnist_found_through_compmod_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "fashion_mnist"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte.gz", np.full((2, 3, 3), 9), compress=True)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.array([4, 5]), compress=True)
    monkeypatch.setenv("COMPMOD_DATA_DIR", str(tmp_path))
    ds = load_dataset("fashion_mnist", "train")  # found before /usr/share/datasets/fashion-mnist
    assert ds.images.shape == (2, 1, 3, 3) and ds.labels.tolist() == [4, 5]
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion_mnist", "test")
    assert "t10k-images-idx3-ubyte" in _one_line(err)


# ----------------------------------------------------------------------------- CIFAR
@pytest.fixture()
def cifar10_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        dump_pickle(
            cifar_batch(rng, 3, b"labels", 10), folder / f"data_batch_{i}", protocol=2 if i % 2 else 5
        )
    dump_pickle(cifar_batch(rng, 4, b"labels", 10), folder / "test_batch")
    names = list(CIFAR10_NAMES)
    dump_pickle({b"label_names": names, b"num_cases_per_batch": 3}, folder / "batches.meta")
    return folder


def test_cifar10_pixels_labels_and_classes(cifar10_dir: Path) -> None:
    ds = load_dataset("cifar10", "train", root=str(cifar10_dir.parent))  # parent of cifar-10-batches-py
    batches = [pickle.loads((cifar10_dir / f"data_batch_{i}").read_bytes()) for i in range(1, 6)]
    data = np.concatenate([b[b"data"] for b in batches])
    assert ds.images.shape == (15, 3, 32, 32) and ds.images.dtype == torch.uint8
    for n, c, h, w in [(0, 0, 0, 0), (4, 1, 2, 5), (14, 2, 31, 7), (7, 2, 5, 31)]:
        assert ds.images[n, c, h, w] == data[n, c * 1024 + h * 32 + w]  # R, G, B planes, each row-major
    assert ds.labels.tolist() == sum((b[b"labels"] for b in batches), [])
    assert ds.classes[1] == "automobile" and len(ds.classes) == 10
    test = load_dataset("cifar10", "test", root=str(cifar10_dir))  # the batches folder itself
    assert len(test) == 4
    assert torch.equal(load_dataset("cifar10", "pretrain", root=str(cifar10_dir)).images, ds.images)


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = cifar_batch(rng, 6, b"fine_labels", 100)
    train[b"coarse_labels"] = [0] * 6
    dump_pickle(train, folder / "train")
    dump_pickle(cifar_batch(rng, 2, b"fine_labels", 100), folder / "test")
    dump_pickle(
        {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []},
        folder / "meta",
    )
    ds = load_dataset("cifar100", "train", root=str(tmp_path))
    assert ds.labels.tolist() == train[b"fine_labels"] and ds.classes[42] == "c42" and len(ds.classes) == 100
    assert ds.images[5, 1, 30, 3] == train[b"data"][5, 1024 + 30 * 32 + 3]
    assert len(load_dataset("cifar100", "test", root=str(tmp_path))) == 2


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def test_cifar_malicious_pickle_is_refused_without_running(cifar10_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    dump_pickle({b"data": _Evil(f"touch {marker}"), b"labels": []}, cifar10_dir / "data_batch_1")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "train", root=str(cifar10_dir))
    msg = _one_line(err)
    assert "system" in msg and str(cifar10_dir / "data_batch_1") in msg
    assert not marker.exists()


def test_cifar_truncated_pickle_and_missing_files(cifar10_dir: Path) -> None:
    path = cifar10_dir / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "test", root=str(cifar10_dir))
    assert str(path) in _one_line(err)
    (cifar10_dir / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", "train", root=str(cifar10_dir))


def test_cifar_not_found_message_has_download_hint(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", "train", root=str(tmp_path))
    msg = _one_line(err)
    assert (
        str(tmp_path / "cifar-10-batches-py") in msg and "https://www.cs.toronto.edu/~kriz/cifar.html" in msg
    )


# ----------------------------------------------------------------------------- STL-10
@pytest.fixture()
def stl_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(2)
    write_stl(folder, "train", rng.integers(0, 256, (4, 3, 96, 96), dtype=np.uint8), np.array([0, 9, 3, 3]))
    write_stl(folder, "test", rng.integers(0, 256, (3, 3, 96, 96), dtype=np.uint8), np.array([1, 2, 5]))
    classes = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(classes) + "\n")
    return folder


def test_stl10_column_major_pixels_match_official_reader(stl_dir: Path) -> None:
    ds = load_dataset("stl10", "train", root=str(stl_dir.parent))
    raw = np.fromfile(stl_dir / "train_X.bin", dtype=np.uint8)
    official_hwc = np.transpose(raw.reshape(-1, 3, 96, 96), (0, 3, 2, 1))
    assert ds.images.shape == (4, 3, 96, 96)
    assert torch.equal(ds.images.permute(0, 2, 3, 1), torch.from_numpy(official_hwc.copy()))
    n, c, h, w = 2, 1, 10, 70
    assert ds.images[n, c, h, w] == raw[n * 27648 + c * 9216 + w * 96 + h]
    assert ds.labels.tolist() == [0, 9, 3, 3] and ds.classes[7] == "monkey"
    assert load_dataset("stl10", "test", root=str(stl_dir)).labels.tolist() == [1, 2, 5]


def test_stl10_pretrain_appends_unlabeled_with_minus_one(stl_dir: Path) -> None:
    with pytest.warns(UserWarning, match="unlabeled_X.bin"):
        only_train = load_dataset("stl10", "pretrain", root=str(stl_dir))
    assert len(only_train) == 4
    extra = np.random.default_rng(3).integers(0, 256, (5, 3, 96, 96), dtype=np.uint8)
    write_stl(stl_dir, "unlabeled", extra, None)
    ds = load_dataset("stl10", "pretrain", root=str(stl_dir), image_size=32)
    assert ds.images.shape == (9, 3, 32, 32)
    assert ds.labels.tolist() == [0, 9, 3, 3, -1, -1, -1, -1, -1]
    full = load_dataset("stl10", "pretrain", root=str(stl_dir))
    assert torch.equal(full.images[4:], torch.from_numpy(extra)) and torch.equal(
        full.images[:4], only_train.images
    )


def test_stl10_bad_file_size_is_data_error(stl_dir: Path) -> None:
    (stl_dir / "test_X.bin").write_bytes(bytes(1000))
    with pytest.raises(DataError) as err:
        load_dataset("stl10", "test", root=str(stl_dir))
    assert str(stl_dir / "test_X.bin") in _one_line(err)


# ----------------------------------------------------------------------------- image folders
def _png(path: Path, value: int | tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if isinstance(value, int) else "RGB"
    Image.new(mode, size, value).save(path)


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    """train: cat = 2 colour 8x8 + 1 colour 10x6; dog = 2 grey 8x8. test: one of each, grey 5x5 for dog."""
    root = tmp_path / "imgs"
    _png(root / "train/cat/a.png", (200, 10, 30))
    _png(root / "train/cat/b.jpg", (0, 255, 0))
    _png(root / "train/cat/wide.png", (9, 9, 9), size=(10, 6))
    _png(root / "train/dog/a.png", 100)
    _png(root / "train/dog/sub/b.png", 50)
    _png(root / "test/cat/x.png", (1, 2, 3))
    _png(root / "test/dog/y.png", 70, size=(5, 5))
    return root


def test_folder_classes_channels_and_most_common_size(mixed_folder: Path) -> None:
    ds = load_dataset("folder", "train", root=str(mixed_folder))
    assert ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.images.shape == (5, 3, 8, 8)  # mixed grey/colour -> 3; most common size 8x8
    assert torch.equal(
        ds.images[0], torch.tensor([200, 10, 30], dtype=torch.uint8).view(3, 1, 1).expand(3, 8, 8)
    )
    assert (ds.images[3] == 100).all() and (ds.images[2] == 9).all()  # grey repeated; 10x6 resized
    test = load_dataset("folder", "test", root=str(mixed_folder))
    assert (
        test.images.shape == (2, 3, 8, 8) and test.labels.tolist() == [0, 1] and (test.images[1] == 70).all()
    )
    grey = load_dataset("folder", "train", root=str(mixed_folder), channels=1, image_size=16)
    assert grey.images.shape == (5, 1, 16, 16)
    assert (grey.images[0] == (200 * 19595 + 10 * 38470 + 30 * 7471 + 32768) >> 16).all()


def test_folder_all_grey_gives_one_channel_and_val_is_test(tmp_path: Path) -> None:
    for cls, value in [("a", 10), ("b", 20)]:
        _png(tmp_path / f"train/{cls}/0.png", value, size=(6, 4))
        _png(tmp_path / f"val/{cls}/0.png", value + 1, size=(6, 4))
    ds = load_dataset("folder", "test", root=str(tmp_path))
    assert ds.images.shape == (2, 1, 4, 6) and ds.images[:, 0, 0, 0].tolist() == [11, 21]


def test_folder_holdout_is_seeded_stratified_and_disjoint(tmp_path: Path) -> None:
    for cls in range(3):
        for i in range(10):
            _png(tmp_path / f"train/c{cls}/{i}.png", cls * 50 + i, size=(4, 4))
    ids = {}
    for split in ("train", "test", "pretrain"):
        ds = load_dataset("folder", split, root=str(tmp_path), holdout_fraction=0.2, seed=7)
        ids[split] = ds.images[:, 0, 0, 0].tolist()
    assert len(ids["test"]) == 6 and len(ids["train"]) == 24 and ids["pretrain"] == ids["train"]
    assert not set(ids["test"]) & set(ids["train"]) and len(set(ids["test"]) | set(ids["train"])) == 30
    again = load_dataset("folder", "test", root=str(tmp_path), holdout_fraction=0.2, seed=7)
    assert again.images[:, 0, 0, 0].tolist() == ids["test"] and again.labels.bincount().tolist() == [2, 2, 2]
    other = load_dataset("folder", "test", root=str(tmp_path), holdout_fraction=0.2, seed=8)
    assert other.images[:, 0, 0, 0].tolist() != ids["test"]
    with pytest.raises(ConfigError, match="holdout_fraction"):
        load_dataset("folder", "test", root=str(tmp_path), holdout_fraction=0.0)


@pytest.mark.parametrize("sub", ["", "train"])
def test_folder_flat_images_serve_pretrain_only(tmp_path: Path, sub: str) -> None:
    for i in range(3):
        _png(tmp_path / sub / f"{i}.png", (i, i, i))
    ds = load_dataset("folder", "pretrain", root=str(tmp_path))
    assert ds.images.shape == (3, 3, 8, 8) and ds.labels.tolist() == [-1, -1, -1] and ds.classes == []
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("folder", "train", root=str(tmp_path))
    assert "class folders" in _one_line(err)


def test_folder_corrupt_image_names_the_file(mixed_folder: Path) -> None:
    bad = mixed_folder / "train/dog/bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError) as err:
        load_dataset("folder", "train", root=str(mixed_folder))
    assert str(bad) in _one_line(err)
    good = (mixed_folder / "train/dog/a.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated; image_size and channels given: no header scan
    with pytest.raises(DataError) as err:
        load_dataset("folder", "train", root=str(mixed_folder), image_size=8, channels=3)
    assert str(bad) in _one_line(err)


def test_folder_test_dir_without_classes_and_empty_holdout(tmp_path: Path) -> None:
    _png(tmp_path / "train/a/0.png", 1)
    with pytest.raises(DataError, match="no images for split 'test'"):  # 1 image per class: none held out
        load_dataset("folder", "test", root=str(tmp_path))
    _png(tmp_path / "test/0.png", 1)
    with pytest.raises(DatasetNotFoundError, match="class folders"):
        load_dataset("folder", "test", root=str(tmp_path))
    assert len(load_dataset("folder", "train", root=str(tmp_path))) == 1


def test_folder_missing_root_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("folder", "pretrain", root=str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in _one_line(err)
