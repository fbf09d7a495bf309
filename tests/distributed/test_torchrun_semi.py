"""`torchrun --nproc_per_node 2 -m compmod train` with `train.sync_bn=true` and `eval.semi=true` finishes
(issue 14). Rank 0 alone evaluates and fine-tunes a copy of the backbone, so that copy must hold per-process
BatchNorm: with compmod's SyncBatchNorm left in, rank 0 called an all-reduce that rank 1 never joins. Over
gloo that fails once rank 1 has exited ("Connection closed by peer"); a backend that keeps waiting (NCCL)
hangs, which the timeout turns into a failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.distributed.launch import torchrun_with_timeout
from tests.helpers import requires_fmnist, set_args

pytestmark = [requires_fmnist, pytest.mark.slow]

# Two pretraining steps, then kNN + fine-tuning on 100 labelled images (a 20 % subset: 20 labels).
RUN = [
    "data.subset=32",
    "train.batch_size=16",
    "train.max_steps=2",
    "train.sync_bn=true",
    "method.proj_hidden_dim=32",
    "method.proj_dim=16",
    "train.progress=false",
    "train.threads=1",
    "eval.enabled=true",
    "eval.linear=false",
    "eval.pixel_knn=false",
    "eval.precision=fp32",
    "eval.train_subset=100",
    "eval.test_subset=100",
    "eval.knn_weighted_k=20",
    "eval.semi=true",
    "eval.semi_fractions=[0.2]",
    "eval.semi_epochs=1",
    "eval.semi_batch_size=8",
]
TIMEOUT_S = 120  # the run takes ~9 s on a 2-core machine; a hang must fail the test, not block the suite


def test_torchrun_sync_bn_run_fine_tunes_on_rank0_and_finishes(tmp_path: Path):
    run = torchrun_with_timeout("train", *set_args([*RUN, f"train.run_dir={tmp_path}"]), timeout=TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"] == 2 and results["semi_20pct_labels"] == 20
    assert 0.0 <= results["semi_20pct_top1"] <= results["semi_20pct_top5"] <= 100.0
    assert "knn_top1" in results
