"""`folder` datasets with symbolic links to folders: each real folder is read once, so a link loop neither
hangs nor repeats images (before: one loop read every image 41 times, into train and held-out alike)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compmod.data.datasets import load_dataset
from compmod.data.datasets.folder import images_in


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8), mode="L").save(path)


def _classes(root: Path, per_class: int = 5) -> None:
    for c, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            _png(root / "train" / name / f"{i}.png", 20 * c + i)


def test_one_link_loop_reads_each_image_once(tmp_path):
    root = tmp_path / "data"
    _classes(root)
    os.symlink("..", root / "train" / "cat" / "up")  # cat/up -> train: a loop through every class
    files = images_in(root / "train" / "cat", recursive=True)
    assert len(files) == len({f.resolve() for f in files})
    test = load_dataset("folder", "test", root=str(root), holdout_fraction=0.2)
    train = load_dataset("folder", "train", root=str(root), holdout_fraction=0.2)
    pretrain = load_dataset("folder", "pretrain", root=str(root), holdout_fraction=0.2)
    assert (len(train), len(test), len(pretrain)) == (8, 2, 8)  # 10 images: 1 of each class held out
    held = {int(x) for x in test.images[:, 0, 0, 0]}
    kept = {int(x) for x in train.images[:, 0, 0, 0]}
    assert held | kept == {0, 1, 2, 3, 4, 20, 21, 22, 23, 24}
    assert not held & kept  # no image in both the train and the held-out split


@pytest.mark.timeout(60)
def test_two_link_loops_terminate(tmp_path):
    root = tmp_path / "data"
    _classes(root, per_class=3)
    cat = root / "train" / "cat"
    (cat / "sub").mkdir()
    _png(cat / "sub" / "deep.png", 99)
    os.symlink("..", cat / "sub" / "back")  # sub/back -> cat
    os.symlink("sub", cat / "again")  # cat/again -> sub, which links back to cat
    files = images_in(cat, recursive=True)
    assert sorted(f.resolve() for f in files) == sorted(
        (cat / n).resolve() for n in ("0.png", "1.png", "2.png", "sub/deep.png")
    )
    train = load_dataset("folder", "train", root=str(root), holdout_fraction=0.2)
    test = load_dataset("folder", "test", root=str(root), holdout_fraction=0.2)
    assert (len(train), len(test)) == (5, 2)  # 4 cats (one in sub/) and 3 dogs, one of each held out


def test_link_to_a_folder_outside_is_followed_once(tmp_path):
    outside = tmp_path / "elsewhere"
    for i in range(3):
        _png(outside / f"{i}.png", 50 + i)
    root = tmp_path / "data"
    _classes(root, per_class=2)
    os.symlink(outside, root / "train" / "cat" / "more")
    os.symlink(outside, root / "train" / "cat" / "more_again")  # the same folder twice: read once
    files = images_in(root / "train" / "cat", recursive=True)
    assert len(files) == 2 + 3
