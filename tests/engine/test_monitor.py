"""The online monitor: kNN on a held-out part of the labelled train split and the representation
diagnostics, logged in the epoch records every eval.monitor_every epochs and at the last epoch."""

from __future__ import annotations

import json

import torch
from tests.helpers import requires_fmnist

from compmod.config import load_config
from compmod.engine.monitor import OnlineMonitor
from compmod.engine.trainer import Trainer
from compmod.eval.diagnostics import representation_stats
from compmod.eval.knn import knn_accuracy

pytestmark = requires_fmnist

RUN = [
    "data.subset=64",
    "train.batch_size=16",
    "method.proj_hidden_dim=32",
    "method.proj_dim=16",
    "train.progress=false",
    "eval.enabled=false",
    "train.threads=1",
    "eval.monitor_images=300",
]
KEYS = ("knn_top1", "h_effective_rank", "z_effective_rank", "h_coding_rate", "z_coding_rate")


def _epochs(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "epoch_loss" in r]


def test_monitor_logs_every_n_epochs_and_at_the_end(tmp_path):
    cfg = load_config(None, [*RUN, "train.epochs=3", "eval.monitor_every=2", f"train.run_dir={tmp_path}"])
    Trainer(cfg).fit()
    records = _epochs(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [all(f"epoch_{k}" in r for k in KEYS) for r in records] == [False, True, True]
    for r in records[1:]:
        assert 10.0 < r["epoch_knn_top1"] <= 100.0  # above chance for 10 classes
        assert 1.0 <= r["epoch_h_effective_rank"] <= 512 and 1.0 <= r["epoch_z_effective_rank"] <= 16
        assert r["epoch_h_coding_rate"] > 0 and r["epoch_z_coding_rate"] > 0


def test_monitor_values_are_knn_and_diagnostics_of_the_encoder(tmp_path):
    cfg = load_config(None, [*RUN, "train.max_steps=2", "eval.monitor_every=1", f"train.run_dir={tmp_path}"])
    trainer = Trainer(cfg)
    trainer.fit()
    monitor = trainer.monitor
    assert monitor is not None
    assert not set(monitor.bank.tolist()) & set(monitor.queries.tolist())
    assert len(monitor.queries) == 60 and len(monitor.bank) == 240
    got = monitor.measure(trainer.method)
    method = trainer.method.eval()
    with torch.no_grad():
        x = monitor.transform(monitor.images)
        h = method.backbone(x)
        z = method.projector(h)
    b, q = monitor.bank, monitor.queries
    want = {"knn_top1": knn_accuracy(h[b], monitor.labels[b], h[q], monitor.labels[q], k=cfg.eval.knn_k)}
    want.update(representation_stats(h, z))
    assert got.keys() == want.keys()
    for k in want:
        assert abs(got[k] - want[k]) <= 1e-4 * max(1.0, abs(want[k])), k
    assert OnlineMonitor(cfg, trainer.device).queries.tolist() == monitor.queries.tolist()  # fixed per seed
