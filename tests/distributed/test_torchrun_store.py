"""Issue 14's acceptance run: a generated ImageNet-style folder (JPEGs of mixed sizes and aspect ratios,
one truncated) is decoded once by `compmod prepare-data`; `torchrun --nproc_per_node 2 -m compmod train`
on it with `train.sync_bn=true` and `eval.semi=true` finishes without decoding again, from crops of the
stored aspect-preserved images; without a store, torchrun stops at once naming the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.distributed.launch import torchrun_with_timeout
from tests.helpers import run_cli, set_args

from compmod.data.datasets.synthetic import write_imagenet

pytestmark = [pytest.mark.slow]

DATA = ["data.name=imagenet", "data.image_size=32", "data.on_bad_image=skip"]
RUN = [
    *DATA,
    "model.backbone=small_cnn",
    "method.proj_hidden_dim=32",
    "method.proj_dim=16",
    "compmod.enabled=true",
    "train.batch_size=16",
    "train.max_steps=3",
    "train.sync_bn=true",
    "train.progress=false",
    "train.threads=1",
    "eval.linear=false",
    "eval.pixel_knn=false",
    "eval.precision=fp32",
    "eval.knn_weighted_k=20",
    "eval.semi=true",
    "eval.semi_fractions=[0.5]",
    "eval.semi_epochs=1",
    "eval.semi_batch_size=8",
]


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_prepare_once_then_torchrun_with_sync_bn_and_semi(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path / "imagenet", classes=3, train=12, val=4, sizes=(40, 120), corrupt=1)
    data = [*DATA, f"data.root={root}", f"data.store_dir={tmp_path / 'stores'}"]
    prepared = run_cli("prepare-data", "--workers", "2", *set_args(data))
    assert prepared.returncode == 0, prepared.stderr
    assert "unreadable files left out: 1" in prepared.stdout and "aspect ratio kept" in prepared.stdout
    (store,) = (tmp_path / "stores").iterdir()
    before = _files(store)
    sizes = np.load(store / "train.index.npy")[:, 1:]
    assert sizes.min(axis=1).tolist() == [37] * 35  # shorter side 32 / 0.875, 35 readable train images
    assert len(set(sizes[:, 0] - sizes[:, 1])) > 10  # each image at its own aspect ratio

    run = torchrun_with_timeout(
        "train", *set_args([*RUN, *data[3:], f"train.run_dir={tmp_path / 'run'}"]),
        timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "run/results.json").read_text())
    assert results["steps"] == 3 and "knn_top1" in results and results["semi_50pct_labels"] > 0
    assert _files(store) == before and list((tmp_path / "stores").iterdir()) == [store]  # written once


def test_torchrun_without_a_store_stops_naming_the_command(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path / "imagenet", classes=2, train=4, val=1, corrupt=0)
    args = [*RUN, f"data.root={root}", f"data.store_dir={tmp_path / 'stores'}"]
    args.append(f"train.run_dir={tmp_path / 'r'}")
    run = torchrun_with_timeout("train", *set_args(args), timeout=120)
    assert run.returncode != 0 and "compmod prepare-data" in run.stderr
    assert not (tmp_path / "stores").exists()  # no rank decoded
