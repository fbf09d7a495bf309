"""Tiny ImageNet, ImageNet and ImageNet-100 from tiny copies in their real layouts (20x24 px JPEGs written
with PIL), the torchvision JPEG path against PIL, and the on-disk cache of decoded splits."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.dataset_writers import (
    COLOURS,
    write_imagenet,
    write_jpeg,
    write_tiny_imagenet,
)

from compmod.data.datasets import jpeg, load_dataset, store_write
from compmod.data.datasets.folder import _decode_all
from compmod.data.datasets.imagenet import IMAGENET100_FILE, imagenet100_classes
from compmod.errors import ConfigError, DataError, DatasetNotFoundError

HINT = "set data.on_bad_image=skip to skip unreadable images"
IN100 = sorted(imagenet100_classes())
LISTED, UNLISTED = [IN100[3], IN100[40]], "n00000001"  # imagenet100 keeps only listed wnids


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Decoded splits go to tmp_path/cache, never to ~/.cache."""
    monkeypatch.setenv("COMPMOD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _colours(ds) -> list[int]:
    """The class whose colour each image has (images are constant colours, up to JPEG error)."""
    means = ds.images.float().mean(dim=(2, 3))
    return torch.cdist(means, torch.tensor(COLOURS, dtype=torch.float32)).argmin(1).tolist()


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- Tiny ImageNet


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    """tiny-imagenet-200 with 3 classes x 3 train images, 4 val images, a test image and a words.txt
    naming two of the classes."""
    return write_tiny_imagenet(tmp_path)


def test_tiny_imagenet_classes_labels_and_splits(tiny: Path) -> None:
    train = load_dataset("tiny_imagenet", "train", root=str(tiny.parent))
    assert train.classes == ["Egyptian cat", "goldfish, Carassius auratus", "n02"]  # words.txt or the wnid
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and _colours(train) == train.labels.tolist()
    assert train.images.shape == (9, 3, 64, 64) and train.images.dtype == torch.uint8  # native 64x64
    pretrain = load_dataset("tiny_imagenet", "pretrain", root=str(tiny))
    assert torch.equal(pretrain.images, train.images) and torch.equal(pretrain.labels, train.labels)
    test = load_dataset("tiny_imagenet", "test", root=str(tiny), image_size=16)
    assert test.labels.tolist() == [2, 0, 1, 2] and _colours(test) == [2, 0, 1, 2]  # val_annotations.txt
    assert test.images.shape == (4, 3, 16, 16) and test.skipped == ()


def test_tiny_imagenet_bad_annotation_and_missing_class(tiny: Path) -> None:
    path = tiny / "val/val_annotations.txt"
    path.write_text(path.read_text() + "val_9.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataError) as err:
        load_dataset("tiny_imagenet", "test", root=str(tiny))
    assert f"{path}:5" in _one_line(err) and "n99" in str(err.value)
    (tiny / "wnids.txt").write_text("n03\nn01\nn02\nn04\n")
    with pytest.raises(DatasetNotFoundError, match="n04"):
        load_dataset("tiny_imagenet", "train", root=str(tiny))


def test_tiny_imagenet_not_found_lists_paths_and_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("tiny_imagenet", "train", root=str(tmp_path / "none"))
    msg = _one_line(err)
    assert str(tmp_path / "none/tiny-imagenet-200") in msg and "wnids.txt" in msg
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in msg
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COMPMOD_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("tiny_imagenet", "train")
    for path in ("data/tiny_imagenet", "home/.cache/compmod/tiny_imagenet", "data/tiny-imagenet-200"):
        assert str(tmp_path / path) in _one_line(err)


# ----------------------------------------------------------------------------- ImageNet, ImageNet-100
@pytest.fixture()
def imagenet(tmp_path: Path) -> Path:
    return write_imagenet(tmp_path / "imagenet", ["n01440764", "n01443537", "n01484850"])


@pytest.mark.parametrize("name", ["imagenet", "imagenet100"])
def test_imagenet_requires_image_size(name: str, imagenet: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_dataset(name, "train", root=str(imagenet))
    assert "data.image_size" in _one_line(err) and "64, 112 or 224" in str(err.value)


def test_imagenet_classes_labels_splits_and_sizes(imagenet: Path) -> None:
    train = load_dataset("imagenet", "train", root=str(imagenet), image_size=16)
    assert train.classes == ["n01440764", "n01443537", "n01484850"]
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and _colours(train) == train.labels.tolist()
    assert train.images.shape == (9, 3, 16, 16) and train.images.dtype == torch.uint8
    test = load_dataset("imagenet", "test", root=str(imagenet), image_size=8, channels=1)
    assert test.images.shape == (3, 1, 8, 8) and test.labels.tolist() == [0, 1, 2]
    luma = (200 * 19595 + 40 * 38470 + 40 * 7471 + 32768) >> 16  # class 0's colour as grey
    assert abs(test.images[0].float().mean().item() - luma) < 3


def test_imagenet_flat_val_asks_for_refoldering(imagenet: Path) -> None:
    for path in list((imagenet / "val").rglob("*.JPEG")):
        path.rename(imagenet / "val" / path.name)
        path.parent.rmdir()
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", "test", root=str(imagenet), image_size=8)
    assert "no class folders" in _one_line(err) and "val/<wnid>/" in str(err.value)


@pytest.mark.parametrize(("name", "searched"), [("imagenet", "none/ILSVRC2012"), ("imagenet100", "none")])
def test_imagenet_not_found_lists_paths_and_hint(name: str, searched: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, "train", root=str(tmp_path / "none"), image_size=8)
    msg = _one_line(err)
    assert f"searched: {tmp_path / 'none'}" in msg and str(tmp_path / searched) in msg
    assert "train/<wnid>/" in msg and "https://image-net.org/download-images" in msg


def test_imagenet100_list_is_cmc(tmp_path: Path) -> None:
    lines = IMAGENET100_FILE.read_text().splitlines()
    assert lines[0].startswith("#") and "HobbitLong/CMC" in lines[0]
    assert len(IN100) == 100 == len(set(lines[1:])) and all(len(w) == 9 and w[0] == "n" for w in IN100)
    assert lines[1:3] == ["n02869837", "n01749939"] and lines[-1] == "n02090622"


def test_imagenet100_keeps_only_listed_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_imagenet(tmp_path / "imagenet", [LISTED[0], UNLISTED, LISTED[1]], n_val=2)
    with caplog.at_level(logging.WARNING, logger="compmod.data"):
        train = load_dataset("imagenet100", "train", root=str(root), image_size=8)
    assert train.classes == IN100 and len(train.classes) == 100  # labels index the sorted 100 wnids
    assert train.labels.tolist() == [3, 3, 3, 40, 40, 40]
    assert _colours(train) == [0, 0, 0, 2, 2, 2]  # the unlisted class (colour 1) is left out
    assert "98 of the 100 classes have no images" in caplog.text
    test = load_dataset("imagenet100", "test", root=str(root), image_size=8)
    assert test.labels.tolist() == [3, 3, 40, 40]
    full = load_dataset("imagenet", "train", root=str(root), image_size=8)
    assert len(full) == 9 and full.classes == sorted([*LISTED, UNLISTED])


# ----------------------------------------------------------------------------- unreadable files
def _bad_imagenet(imagenet: Path) -> list[Path]:
    good = (imagenet / "train/n01443537/n01443537_0.JPEG").read_bytes()
    truncated = imagenet / "train/n01443537/n01443537_1.JPEG"
    truncated.write_bytes(good[: len(good) // 2])
    corrupt = imagenet / "train/n01484850/n01484850_9.JPEG"
    corrupt.write_bytes(b"\xff\xd8\xff" + bytes(200))
    return [truncated, corrupt]


def test_bad_jpeg_fails_naming_the_file(imagenet: Path, cache: Path) -> None:
    bad = _bad_imagenet(imagenet)
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", "train", root=str(imagenet), image_size=8)
    msg = _one_line(err)
    assert msg.startswith(f"cannot decode image {bad[0]}: Truncated File Read") and msg.endswith(HINT)
    assert not list((cache / "stores").iterdir())  # no store, no temporary folder left


def test_bad_jpeg_skipped_logged_and_stored(
    imagenet: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _bad_imagenet(imagenet)
    with caplog.at_level(logging.WARNING, logger="compmod.data"):
        ds = load_dataset("imagenet", "train", root=str(imagenet), image_size=8, on_bad_image="skip")
    assert ds.skipped == tuple(str(p) for p in bad) and len(ds) == 8
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2] and _colours(ds) == ds.labels.tolist()
    messages = [r.getMessage() for r in caplog.records if r.name == "compmod.data"]
    for path, message in zip(bad, messages[:2], strict=True):
        assert message.startswith(f"skipping unreadable image {path}: ")
    assert messages[2].startswith("skipped 2 of 10 images of split 'train'") and len(messages) == 3
    # From the store: the same images and skipped files under "skip", the same error under "fail".
    monkeypatch.setattr(store_write, "decode_views", _no_decoding)
    again = load_dataset("imagenet", "train", root=str(imagenet), image_size=8, on_bad_image="skip")
    assert torch.equal(again.images, ds.images) and again.skipped == ds.skipped
    with pytest.raises(DataError, match=f"cannot decode image {bad[0]}: Truncated File Read"):
        load_dataset("imagenet", "train", root=str(imagenet), image_size=8)


# ----------------------------------------------------------------------------- the prepared store
def _no_decoding(*args, **kwargs):
    raise AssertionError("decoded again instead of reading the store")


def _mapped_from(t: torch.Tensor, path: Path) -> bool:
    """Whether the memory of `t` is a mapping of the file `path` (Linux's /proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(a, 16) for a in fields[0].split("-"))
        if len(fields) == 6 and fields[5] == str(path) and start <= t.data_ptr() < end:
            return True
    return False


STORE_FILES = [
    "meta.json",
    "train.eval.bin",
    "train.images.bin",
    "train.index.npy",
    "train.labels.npy",
    "val.eval.bin",
    "val.labels.npy",
]


def test_store_is_reused_and_invalidated_by_the_file_list(
    imagenet: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_dataset("imagenet", "pretrain", root=str(imagenet), image_size=8)
    (folder,) = (cache / "stores").iterdir()  # one store (train/ and val/), no temporary folder left
    assert folder.name.startswith("imagenet-9s-8px-3ch-")  # shorter side 8 / 0.875 = 9
    assert sorted(p.name for p in folder.iterdir()) == STORE_FILES
    with monkeypatch.context() as m:
        m.setattr(store_write, "decode_views", _no_decoding)
        train = load_dataset("imagenet", "train", root=str(imagenet), image_size=8)  # the same store
        assert torch.equal(train.images, first.images) and torch.equal(train.labels, first.labels)
        assert load_dataset("imagenet", "test", root=str(imagenet), image_size=8).labels.tolist() == [0, 1, 2]
        if Path("/proc/self/maps").is_file():  # the split is the memory-mapped file, not a copy
            assert _mapped_from(train.images, folder / "train.eval.bin")
        for other in ({"image_size": 16}, {"channels": 1}, {"store_side": 12}):  # another store
            with pytest.raises(AssertionError, match="decoded again"):
                load_dataset("imagenet", "train", root=str(imagenet), **{"image_size": 8, **other})
        new = write_jpeg(imagenet / "train/n01440764/new.JPEG", COLOURS[0])  # another file list
        with pytest.raises(AssertionError, match="decoded again"):
            load_dataset("imagenet", "train", root=str(imagenet), image_size=8)
        new.unlink()  # the same list again: the same store
        again = load_dataset("imagenet", "train", root=str(imagenet), image_size=8)
        assert torch.equal(again.images, first.images)
        os.utime(imagenet / "val/n01440764/ILSVRC2012_val_00.JPEG", ns=(1, 1))  # a val file changed
        with pytest.raises(AssertionError, match="decoded again"):
            load_dataset("imagenet", "train", root=str(imagenet), image_size=8)
    changed = load_dataset("imagenet", "train", root=str(imagenet), image_size=8)
    assert torch.equal(changed.images, first.images) and not folder.exists()  # the stale store is gone
    assert len(list((cache / "stores").glob("imagenet-9s-8px-3ch-*"))) == 1


def test_store_folder_not_writable_is_one_line(imagenet: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError) as err:  # below a file: mkdir fails
        load_dataset("imagenet", "test", root=str(imagenet), image_size=8, store_dir=str(blocker / "s"))
    assert "cannot write the store" in _one_line(err) and "data.store_dir" in str(err.value)


# ----------------------------------------------------------------------------- JPEG fast path
def test_jpeg_fast_path_matches_pil(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for i in range(6):  # smooth random images, as photographs are, at sizes around the target
        small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((24 + 4 * i, 20 + 2 * i), Image.Resampling.BICUBIC)
        files.append(tmp_path / f"{i}.JPEG")
        img.save(files[-1], "JPEG", quality=90)
    Image.fromarray(small).resize((24, 20)).save(tmp_path / "png.JPEG", "PNG")  # ImageNet has one such file
    Image.fromarray(small[..., 0]).resize((24, 20)).save(tmp_path / "grey.jpg")
    files += [tmp_path / "png.JPEG", tmp_path / "grey.jpg"]
    assert [jpeg._read_jpeg(f) is not None for f in files] == [True] * 6 + [False, True]  # by content
    fast, kept, bad = jpeg.decode_files(files, 16, 3, skip=False)
    pil, decoded, _ = _decode_all(files, (16, 16), 3, skip=False)
    assert fast.shape == (8, 3, 16, 16) and kept == decoded == list(range(8)) and not bad
    diff = (torch.from_numpy(fast).float() - pil.float()).abs()
    assert diff.mean() < 2 and diff[6].max() == 0  # the PNG goes through PIL itself
