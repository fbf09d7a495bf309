"""`on_bad_image`: unreadable image files (corrupt, truncated, empty) stop the load or are skipped."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from compmod.config import load_config
from compmod.data.build import build_dataset
from compmod.data.datasets import load_dataset
from compmod.errors import ConfigError, DataError

HINT = "set data.on_bad_image=skip to skip unreadable images"
NO_HEADER_SCAN = {"image_size": 8, "channels": 3}  # size and channels given: only the decode reads files


def _good(path: Path, value: int) -> None:
    """An 8x8 colour PNG of constant grey `value`, so a loaded image tells which file it came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


def _noise_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _write_bad(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "corrupt":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())
    elif kind == "truncated":  # the header is intact: Image.open passes and img.load() fails
        data = _noise_png()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    return path


@pytest.fixture()
def bad_folder(tmp_path: Path) -> tuple[Path, list[Path]]:
    """train: cat = 3 good + corrupt + empty, dog = 2 good + truncated; test: one good image per class."""
    root = tmp_path / "imgs"
    for i in range(3):
        _good(root / f"train/cat/{i}.png", 10 + i)
    for i in range(2):
        _good(root / f"train/dog/{i}.png", 20 + i)
    _good(root / "test/cat/x.png", 30)
    _good(root / "test/dog/y.png", 40)
    bad = [
        _write_bad(root / "train/cat/corrupt.png", "corrupt"),
        _write_bad(root / "train/cat/empty.png", "empty"),
        _write_bad(root / "train/dog/truncated.png", "truncated"),
    ]
    return root, bad


def _values(ds) -> list[int]:
    return ds.images[:, 0, 0, 0].tolist()


def test_truncated_fixture_fails_only_at_load(bad_folder: tuple[Path, list[Path]]) -> None:
    truncated = bad_folder[1][2]
    with Image.open(truncated) as img:
        assert img.size == (8, 8)
        with pytest.raises(OSError, match="truncated"):
            img.load()


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty"])
@pytest.mark.parametrize("fmt", [{}, NO_HEADER_SCAN], ids=["header_scan", "decode_only"])
def test_fail_names_the_file_and_the_hint(tmp_path: Path, kind: str, fmt: dict) -> None:
    _good(tmp_path / "train/a/0.png", 1)
    _good(tmp_path / "train/b/0.png", 2)
    bad = _write_bad(tmp_path / f"train/b/{kind}.png", kind)
    with pytest.raises(DataError) as err:
        load_dataset("folder", "train", root=str(tmp_path), **fmt)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and msg.endswith(HINT)
    reason = {"corrupt": "cannot identify image file", "truncated": "truncated", "empty": "empty file"}
    assert reason[kind] in msg


@pytest.mark.parametrize("fmt", [{}, NO_HEADER_SCAN], ids=["header_scan", "decode_only"])
def test_skip_keeps_good_images_and_logs_each_bad_one(
    bad_folder: tuple[Path, list[Path]], fmt: dict, caplog: pytest.LogCaptureFixture
) -> None:
    root, bad = bad_folder
    with caplog.at_level(logging.WARNING, logger="compmod.data"):
        ds = load_dataset("folder", "train", root=str(root), on_bad_image="skip", **fmt)
    assert _values(ds) == [10, 11, 12, 20, 21] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.images.shape == (5, 3, 8, 8) and ds.classes == ["cat", "dog"]
    assert ds.skipped == tuple(str(p) for p in bad)
    records = [r for r in caplog.records if r.name == "compmod.data" and r.levelno == logging.WARNING]
    per_file, summary = records[:-1], records[-1].getMessage()
    assert len(records) == 4
    for path, record in zip(bad, per_file, strict=True):
        assert record.getMessage().startswith(f"skipping unreadable image {path}: ")
    reasons = [r.getMessage().rsplit(": ", 1)[1] for r in per_file]
    assert reasons[0].startswith("cannot identify image file") and reasons[1] == "empty file (0 bytes)"
    assert reasons[2].startswith("image file is truncated")  # the decoder's reason
    assert summary == (
        f"skipped 3 of 8 images of split 'train' in {root}: "
        "train/cat/corrupt.png, train/cat/empty.png, train/dog/truncated.png"
    )
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_skip_with_nothing_bad_logs_nothing(
    bad_folder: tuple[Path, list[Path]], caplog: pytest.LogCaptureFixture
) -> None:
    root, _ = bad_folder
    with caplog.at_level(logging.WARNING, logger="compmod.data"):
        ds = load_dataset("folder", "test", root=str(root), on_bad_image="skip")
    assert _values(ds) == [30, 40] and ds.skipped == () and not caplog.records


def test_skip_keeps_held_out_split_disjoint(tmp_path: Path) -> None:
    """Without test/: bad files are dropped after the seeded draw, so train and test still partition
    the good images, and each bad file is skipped by exactly one split."""
    bad = []
    for c in range(2):
        for i in range(6):
            _good(tmp_path / f"train/c{c}/{i}.png", 10 * c + i)
        bad += [_write_bad(tmp_path / f"train/c{c}/x{kind}.png", kind) for kind in ("corrupt", "empty")]
    opts = {"root": str(tmp_path), "holdout_fraction": 0.3, "seed": 3, "on_bad_image": "skip"}
    train, test = load_dataset("folder", "train", **opts), load_dataset("folder", "test", **opts)
    assert sorted(_values(train) + _values(test)) == [*range(6), *range(10, 16)]
    assert sorted(train.skipped + test.skipped) == sorted(str(p) for p in bad)


@pytest.mark.parametrize("fmt", [{}, NO_HEADER_SCAN], ids=["header_scan", "decode_only"])
def test_skip_everything_bad_raises(tmp_path: Path, fmt: dict) -> None:
    _write_bad(tmp_path / "train/a/0.png", "corrupt")
    _write_bad(tmp_path / "train/b/0.png", "truncated")
    with pytest.raises(DataError, match=r"all 2 images of split 'train' .* are unreadable"):
        load_dataset("folder", "train", root=str(tmp_path), on_bad_image="skip", **fmt)


def test_skip_whole_test_split_bad_raises(tmp_path: Path) -> None:
    _good(tmp_path / "train/a/0.png", 1)
    _write_bad(tmp_path / "test/a/0.png", "empty")
    assert len(load_dataset("folder", "train", root=str(tmp_path), on_bad_image="skip")) == 1
    with pytest.raises(DataError, match="all 1 images of split 'test'"):
        load_dataset("folder", "test", root=str(tmp_path), on_bad_image="skip")


def test_unknown_policy_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="on_bad_image must be one of: fail, skip; got 'ignore'"):
        load_dataset("folder", "train", root=str(tmp_path), on_bad_image="ignore")


def test_array_datasets_ignore_the_policy(cifar10_root: Path) -> None:
    ds = load_dataset("cifar10", "test", root=str(cifar10_root), on_bad_image="skip")
    assert len(ds) == 60 and ds.skipped == ()


def test_build_dataset_passes_on_bad_image(bad_folder: tuple[Path, list[Path]]) -> None:
    root, bad = bad_folder
    cfg = load_config(None, ["data.name=folder", f"data.root={root}", "data.on_bad_image=skip"])
    ds = build_dataset(cfg, "train")
    assert len(ds) == 5 and ds.skipped == tuple(str(p) for p in bad)
    cfg = load_config(None, ["data.name=folder", f"data.root={root}"])
    with pytest.raises(DataError, match="on_bad_image=skip"):
        build_dataset(cfg, "train")


def test_skip_summary_lists_the_first_five(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _good(tmp_path / "0.png", 1)
    for i in range(7):
        _write_bad(tmp_path / f"x{i}.png", "empty")
    with caplog.at_level(logging.WARNING, logger="compmod.data"):
        ds = load_dataset("folder", "pretrain", root=str(tmp_path), on_bad_image="skip")
    assert len(ds) == 1 and len(ds.skipped) == 7 and len(caplog.records) == 8
    assert caplog.records[-1].getMessage().endswith(": x0.png, x1.png, x2.png, x3.png, x4.png, ... (2 more)")
