"""train.logger: the numeric values of metrics.jsonl also go to Weights & Biases (offline, no network)."""

from __future__ import annotations

import json
import sys

import pytest
from tests.engine.test_trainer import SMALL as TRAINER_SMALL
from tests.helpers import requires_fmnist

from compmod.config import load_config
from compmod.engine.log_sinks import open_sink
from compmod.engine.run import train_and_evaluate
from compmod.errors import ConfigError

SMALL = [*TRAINER_SMALL, "train.log_every=1"]


@requires_fmnist
def test_wandb_offline_run_holds_every_metric_and_a_resumed_run_keeps_its_id(tmp_path) -> None:
    pytest.importorskip("wandb")
    run = tmp_path / "run"
    cfg = [*SMALL, f"train.run_dir={run}", "train.logger=wandb", "train.epochs=2"]
    train_and_evaluate(load_config(None, [*cfg, "train.max_steps=4"]))
    train_and_evaluate(load_config(None, cfg), resume=True)
    runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[1] for r in runs}) == 1  # one id, resumed
    stored = b"".join(f.read_bytes() for r in runs for f in r.glob("run-*.wandb"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) >= 8
    for record in records:  # each key, and each value as W&B serialises it (JSON), is in the run file
        for key, value in record.items():
            if key != "step" and isinstance(value, float):
                assert key.encode() in stored and json.dumps(value).encode() in stored, key


def test_a_missing_logger_package_is_a_config_error_naming_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails as if it were not installed
    with pytest.raises(ConfigError, match=r"train.logger: 'wandb' needs the wandb package.*compmod\[wandb\]"):
        open_sink("wandb", tmp_path, {}, "compmod", "offline")
    assert open_sink("none", tmp_path, {}, "compmod", "offline") is None


def test_unknown_logger_is_rejected_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="train.logger.*none.*tensorboard.*wandb"):
        load_config(None, ["train.logger=mlflow"])
