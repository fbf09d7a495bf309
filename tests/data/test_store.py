"""The prepared store (`compmod.data.datasets.store`): images kept at their own aspect ratio, the standard
evaluation view, several decoding processes, and the torchrun rule (no rank decodes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from compmod.data.datasets import load_dataset, store_write
from compmod.data.datasets.synthetic import write_imagenet
from compmod.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp("in") / "imagenet", classes=3, train=5, val=2)


def _decoded(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_images_keep_their_aspect_at_the_stored_shorter_side(folder: Path) -> None:
    ds = load_dataset("imagenet", "pretrain", root=str(folder), image_size=32, on_bad_image="skip")
    files = sorted(p for p in (folder / "train").rglob("*.JPEG"))
    assert ds.skipped == (str(files[-1]),) and len(ds) == len(files) - 1  # the truncated file
    v = ds.variable
    assert v is not None and len(v) == len(ds) and v.channels == 3
    for i, path in enumerate(files[:-1]):
        w, h = Image.open(path).size
        sh, sw = v.sizes[i].tolist()
        assert min(sh, sw) == 37  # 32 / 0.875
        # aspect within the rounding of the longer side to whole pixels
        assert abs(max(sh, sw) - max(h, w) * 37 / min(h, w)) <= 0.5 and (sh <= sw) == (h <= w)
    # the stored pixels are the antialiased resize of the decoded file
    img = _decoded(files[0])
    ref = F.interpolate(img[None].float(), size=tuple(v.sizes[0].tolist()), mode="bilinear", antialias=True)
    assert (torch.from_numpy(v.image(0).copy()).float() - ref[0]).abs().mean() < 1.0


def test_eval_view_is_resize_then_centre_crop(folder: Path) -> None:
    test = load_dataset("imagenet", "test", root=str(folder), image_size=32)
    files = sorted(p for p in (folder / "val").rglob("*.JPEG"))
    assert test.images.shape == (len(files), 3, 32, 32) and test.variable is None
    for i in (0, len(files) - 1):  # torchvision's Resize(37) + CenterCrop(32), on the float image
        img = _decoded(files[i]).float()
        h, w = img.shape[1:]
        size = (37, round(w * 37 / h)) if h <= w else (round(h * 37 / w), 37)
        big = F.interpolate(img[None], size=size, mode="bilinear", antialias=True)[0]
        top, left = (size[0] - 32) // 2, (size[1] - 32) // 2
        ref = big[:, top : top + 32, left : left + 32]
        assert (test.images[i].float() - ref).abs().mean() < 1.0  # uint8 kernel against float: rounding


def test_two_worker_processes_write_the_same_store(folder: Path, tmp_path: Path) -> None:
    # byte equality is a replay: each image goes through the same decoder and resize kernel on one thread
    # in both (the workers run one thread each; here this process is set to one for the call)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = load_dataset("imagenet", "pretrain", root=str(folder), image_size=16, on_bad_image="skip",
                           store_dir=str(tmp_path / "a"))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    two = load_dataset("imagenet", "pretrain", root=str(folder), image_size=16, on_bad_image="skip",
                       store_dir=str(tmp_path / "b"), workers=2)  # fmt: skip
    (a,), (b,) = (tmp_path / "a").iterdir(), (tmp_path / "b").iterdir()
    for name in ("train.images.bin", "train.index.npy", "train.eval.bin", "val.eval.bin", "train.labels.npy"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert one.skipped == two.skipped


def test_no_store_and_no_preparing_is_an_error_naming_the_command(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", "pretrain", root=str(folder), image_size=16, prepare=False)
    msg = str(err.value)
    assert "\n" not in msg and "compmod prepare-data" in msg and "torchrun" in msg
    assert not (tmp_path / "stores").exists()


def test_a_crash_while_writing_leaves_no_store(folder: Path, tmp_path: Path, monkeypatch) -> None:
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_write, "decode_views", crash)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("imagenet", "train", root=str(folder), image_size=16, store_dir=str(tmp_path / "s"))
    assert list((tmp_path / "s").iterdir()) == []


def test_preparing_in_this_process_leaves_its_thread_count(folder: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not 1, so that a decoder setting 1 would show
    try:
        load_dataset(
            "imagenet", "test", root=str(folder), image_size=16, on_bad_image="skip", store_dir=str(tmp_path)
        )
        assert torch.get_num_threads() == 2  # a single-process run trains with its own train.threads
    finally:
        torch.set_num_threads(before)
