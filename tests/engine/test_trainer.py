"""The training loop end to end on small real data: every method x backbone, resume, failures."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers import method_overrides, requires_fmnist

from compmod.config import load_config
from compmod.engine.run import train_and_evaluate
from compmod.engine.trainer import Trainer, checkpoint_path
from compmod.errors import CheckpointError, NonFiniteLossError
from compmod.methods import METHODS

pytestmark = requires_fmnist

SMALL = [
    "data.subset=64",
    "train.batch_size=16",
    "method.proj_hidden_dim=64",
    "method.proj_dim=32",
    "train.progress=false",
    "eval.enabled=false",
    "train.threads=1",
]


def _cfg(tmp_path, *extra: str):
    return load_config(None, [*SMALL, f"train.run_dir={tmp_path / 'run'}", *extra])


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("method", METHODS.names())
def test_trainer_two_steps_every_method_and_backbone(tmp_path, method, backbone):
    cfg = _cfg(tmp_path, *method_overrides(method), f"model.backbone={backbone}", "train.max_steps=2")
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.method.backbone.state_dict().items()}
    state = trainer.fit()
    assert state.step == 2
    after = trainer.method.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 1 and all(
        torch.isfinite(torch.tensor(r["loss"])) for r in lines if "loss" in r
    )
    assert checkpoint_path(tmp_path / "run").is_file()


def test_trainer_resume_matches_uninterrupted_run(tmp_path):
    full = Trainer(_cfg(tmp_path / "a", "train.epochs=2"))
    full.fit()
    first = Trainer(_cfg(tmp_path / "b", "train.epochs=1"))
    first.fit()
    resumed = Trainer(_cfg(tmp_path / "b", "train.epochs=2"), resume=True)
    assert resumed.state.epoch == 1 and resumed.state.step == 4
    resumed.fit()
    assert resumed.state.step == full.state.step == 8
    for (k, a), b in zip(full.method.state_dict().items(), resumed.method.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_trainer_mid_epoch_stop_resumes_at_the_next_batch(tmp_path):
    t = Trainer(_cfg(tmp_path, "train.epochs=2", "train.max_steps=3"))
    t.fit()
    again = Trainer(_cfg(tmp_path, "train.epochs=2"), resume=True)
    assert (again.state.epoch, again.state.batch, again.state.step) == (0, 3, 3)
    again.fit()
    assert (again.state.epoch, again.state.batch, again.state.step) == (2, 0, 8)


def test_resumed_run_reports_the_time_of_every_part(tmp_path, monkeypatch):
    """train_time_s of a stopped and resumed run sums both processes' times up to their checkpoints, not
    the resumed part's alone. A fake clock makes the sums exact: it ticks 10 s per reading in the first
    process, then stands still except where the test moves it."""
    from compmod.engine import trainer as trainer_module

    ticks = iter(range(0, 10_000, 10))
    now = {"t": None}
    monkeypatch.setattr(
        trainer_module.time, "perf_counter", lambda: now["t"] if now["t"] is not None else float(next(ticks))
    )
    Trainer(_cfg(tmp_path, "train.epochs=2", "train.max_steps=3")).fit()
    saved = torch.load(checkpoint_path(tmp_path / "run"), weights_only=True)["seconds"]
    assert saved >= 10.0  # construction to the last checkpoint: at least one tick
    now["t"] = 5000.0
    resumed = Trainer(_cfg(tmp_path, "train.epochs=2"), resume=True)
    assert resumed.elapsed_s() == saved  # the first process's time, nothing yet of this one
    now["t"] = 5100.0
    resumed.fit()  # the final checkpoint: saved + 100
    results = train_and_evaluate(_cfg(tmp_path, "train.epochs=2"), resume=True)  # finished: nothing to do
    assert results["train_time_s"] == round(saved + 100.0, 2)


def test_trainer_refuses_to_overwrite_and_to_resume_nothing(tmp_path):
    with pytest.raises(CheckpointError, match="--resume: no checkpoint at"):
        Trainer(_cfg(tmp_path), resume=True)
    Trainer(_cfg(tmp_path, "train.max_steps=1")).fit()
    with pytest.raises(CheckpointError, match="already holds a checkpoint; pass --resume"):
        Trainer(_cfg(tmp_path))
    Trainer(_cfg(tmp_path, "train.max_steps=1"), overwrite=True).fit()


def test_trainer_stops_on_non_finite_loss_naming_step_and_parts(tmp_path, monkeypatch):
    t = Trainer(_cfg(tmp_path, "train.epochs=2"))
    forward = type(t.method).forward
    calls = {"n": 0}

    def poisoned(self, x1, x2):
        out = forward(self, x1, x2)
        calls["n"] += 1
        if calls["n"] == 6:  # second epoch, after the epoch-1 checkpoint exists
            out.loss = out.loss * float("nan")
            out.parts["ssl"] = out.loss.detach()
        return out

    monkeypatch.setattr(type(t.method), "forward", poisoned)
    with pytest.raises(
        NonFiniteLossError,
        match=r"non-finite loss nan at epoch 2, step 5 \(parts: ssl=nan\).*"
        r"last good checkpoint: .*last\.pt",
    ):
        t.fit()


def test_train_and_evaluate_writes_results_with_all_metrics(tmp_path):
    cfg = _cfg(
        tmp_path, "eval.enabled=true", "eval.train_subset=500", "eval.linear_epochs=2", "train.max_steps=2"
    )
    results = train_and_evaluate(cfg)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    for key in ("knn_top1", "knn_weighted_top1", "linear_top1", "linear_top5", "pixel_knn_top1"):
        assert 0.0 <= saved[key] <= 100.0 and saved[key] == results[key]
    assert saved["eval_test_size"] == 10000  # the evaluation set is never shrunk
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("data:")
