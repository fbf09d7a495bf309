"""data.validation_fraction: a stratified part of the labelled train images is the evaluation split, left
out of pretraining and of the kNN bank / probes; the dataset's test files are never read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.dataset_writers import write_stl10
from tests.helpers import FMNIST, requires_fmnist

from compmod.config import load_config
from compmod.data.build import build_dataset
from compmod.data.datasets.holdout import holdout_mask
from compmod.errors import ConfigError


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(row) for row in images.flatten(1).numpy()}


@pytest.fixture()
def train_only(tmp_path: Path) -> Path:
    """Fashion-MNIST's training files alone: reading the test files would fail."""
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (tmp_path / name).symlink_to(FMNIST / name)
    return tmp_path


@requires_fmnist
def test_validation_images_are_held_out_of_train_and_pretrain_per_class(train_only: Path) -> None:
    cfg = load_config(None, [f"data.root={train_only}", "data.validation_fraction=0.1"])
    val, train, pretrain = (build_dataset(cfg, s) for s in ("test", "train", "pretrain"))
    assert (len(val), len(train)) == (6000, 54000)
    assert torch.equal(pretrain.images, train.images) and torch.equal(pretrain.labels, train.labels)
    assert torch.bincount(val.labels).tolist() == [600] * 10  # 10 % of each class's 6000
    # Fashion-MNIST repeats a few images within train: compare the held-out rows with the kept ones by
    # the mask instead, and check no image was both kept and held out by position.
    full = build_dataset(load_config(None, [f"data.root={train_only}"]), "train")
    held = torch.from_numpy(holdout_mask(full.labels.numpy(), 0.1, seed=0))
    assert torch.equal(val.images, full.images[held]) and torch.equal(train.images, full.images[~held])


@requires_fmnist
def test_the_validation_split_does_not_follow_the_training_seed(train_only: Path) -> None:
    splits = [
        build_dataset(
            load_config(None, [f"data.root={train_only}", "data.validation_fraction=0.05", s]), "test"
        )
        for s in ("train.seed=0", "train.seed=7")
    ]
    assert torch.equal(splits[0].labels, splits[1].labels) and torch.equal(splits[0].images, splits[1].images)


def test_stl10_pretrain_keeps_the_unlabelled_images_and_drops_the_validation_ones(tmp_path: Path) -> None:
    root = write_stl10(tmp_path, n_train=20, n_test=4, n_unlabeled=8)
    cfg = load_config(None, ["data.name=stl10", f"data.root={root}", "data.validation_fraction=0.25"])
    val, train, pretrain = (build_dataset(cfg, s) for s in ("test", "train", "pretrain"))
    assert len(val) + len(train) == 20 and len(val) >= 1
    assert len(pretrain) == len(train) + 8 and (pretrain.labels[len(train) :] == -1).all()
    assert torch.equal(pretrain.images[: len(train)], train.images)
    assert not _rows(val.images) & _rows(pretrain.images)  # random 96x96 images never repeat


@pytest.mark.parametrize("name", ["imagenet", "imagenet100"])
def test_prepared_store_datasets_refuse_a_validation_split(name: str, tmp_path: Path) -> None:
    cfg = load_config(None, [f"data.name={name}", f"data.root={tmp_path}", "data.validation_fraction=0.1"])
    with pytest.raises(ConfigError, match=f"data.validation_fraction: 0.1 is not accepted for {name}"):
        build_dataset(cfg, "train")


@pytest.mark.parametrize("value", ["0", "1", "1.5"])
def test_validation_fraction_outside_zero_one_is_a_config_error(value: str) -> None:
    with pytest.raises(
        ConfigError, match=r"data.validation_fraction: .* expected null or a float in \(0, 1\)"
    ):
        load_config(None, [f"data.validation_fraction={value}"])


def test_holdout_mask_is_stratified_and_never_takes_a_whole_class() -> None:
    labels = np.array([0] * 10 + [1] * 3 + [2])
    mask = holdout_mask(labels, 0.2, seed=3)
    assert [int(mask[labels == c].sum()) for c in (0, 1, 2)] == [2, 1, 0]
