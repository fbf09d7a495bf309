"""Faults of a real `compmod train` process: SIGKILL at several points then --resume ends with the
weights of an uninterrupted run (bit-identical on CPU); SIGTERM writes a checkpoint and exits cleanly;
mid-epoch checkpoints every N steps; a checkpoint holding a pickle payload is refused and never runs."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tests.helpers import built_once, requires_fmnist, run_cli

from compmod.config import load_config
from compmod.engine.checkpoint import load_checkpoint
from compmod.engine.trainer import Trainer, checkpoint_path

pytestmark = [requires_fmnist, pytest.mark.slow]

# 3 epochs x 8 steps; CompMod's mixup_h fusion draws alpha from its own generator, MoCo v2 has a queue:
# a resumed run must restore both, the EMA key encoder, the optimisers and the data position.
RUN = [
    "data.subset=128",
    "train.batch_size=16",
    "train.epochs=3",
    "method.proj_hidden_dim=32",
    "method.proj_dim=16",
    "train.progress=false",
    "eval.enabled=false",
    "train.threads=1",
    "train.log_every=1",  # every step in metrics.jsonl (and signals acted on at every step)
]
SETUPS = {
    "simclr+compmod": ["method.name=simclr", "compmod.enabled=true", "compmod.fusion=mixup_h"],
    "moco_v2": ["method.name=moco_v2", "method.queue_size=64"],
}
TOTAL_STEPS = 24


def _args(run_dir: Path, setup: str, checkpoint_every: int | None = 1) -> list[str]:
    out = ["train"]
    every = [] if checkpoint_every is None else [f"train.checkpoint_every={checkpoint_every}"]
    for item in [*RUN, *SETUPS[setup], *every, f"train.run_dir={run_dir}"]:
        out += ["--set", item]
    return out


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "compmod", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line being written
            continue
        if "epoch_loss" not in record:
            steps.append(record["step"])
    return steps


def _run_until(proc: subprocess.Popen, run_dir: Path, step: int, sig: int) -> None:
    """Send `sig` once the run has logged `step` (it is then between steps, or in a checkpoint write)."""
    deadline = time.monotonic() + 300
    while not _logged_steps(run_dir) or max(_logged_steps(run_dir)) < step:
        assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()[1].decode()}"
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be stopped"
    proc.send_signal(sig)
    proc.wait(timeout=120)


def _final(run_dir: Path) -> dict:
    return load_checkpoint(checkpoint_path(run_dir))


def _assert_same_run(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] == TOTAL_STEPS
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for i, state in a["optimizer"]["state"].items():
        for k, v in state.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), (i, k)
    if a["compmod"] is not None:
        for key in a["compmod"]["head"]:
            assert torch.equal(a["compmod"]["head"][key], b["compmod"]["head"][key]), key
        assert torch.equal(a["compmod"]["generator"], b["compmod"]["generator"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Callable[[str], dict]:
    """setup -> the final checkpoint of its uninterrupted run (trained once per session, on first use)."""

    def final(setup: str) -> dict:
        def train(run_dir: Path) -> None:
            done = run_cli(*_args(run_dir, setup))
            assert done.returncode == 0, done.stderr

        return _final(built_once(tmp_path_factory, f"faults-{setup}", train))

    return final


@pytest.mark.parametrize("setup", list(SETUPS))
def test_sigkill_at_several_points_then_resume_gives_identical_weights(tmp_path, setup, uninterrupted):
    run_dir = tmp_path / "run"
    args = _args(run_dir, setup)
    proc = _start(args)
    for kill_at in (3, 10, 17):  # epoch 1, epoch 2, epoch 3
        _run_until(proc, run_dir, kill_at, signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL
        resumed_from = load_checkpoint(checkpoint_path(run_dir))["step"]
        assert kill_at - 1 <= resumed_from <= TOTAL_STEPS  # step k is logged before its checkpoint
        proc = _start([*args, "--resume"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    _assert_same_run(_final(run_dir), uninterrupted(setup))
    # every step is logged exactly once, although steps after each last checkpoint ran twice
    assert _logged_steps(run_dir) == list(range(1, TOTAL_STEPS + 1))
    assert (run_dir / "weights" / "backbone.safetensors").is_file()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_checkpoint_then_exit_cleanly(tmp_path, sig, uninterrupted):
    run_dir = tmp_path / "run"
    args = _args(run_dir, "simclr+compmod", checkpoint_every=None)  # only the signal writes mid-epoch
    proc = _start(args)
    _run_until(proc, run_dir, 5, sig)
    err = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert proc.returncode == 128 + sig, err
    name = signal.Signals(sig).name
    stopped = load_checkpoint(checkpoint_path(run_dir))["step"]
    assert f"stopped by {name} after step {stopped}; checkpoint written to" in err and "--resume" in err
    assert 5 <= stopped < TOTAL_STEPS and stopped == max(_logged_steps(run_dir))
    done = run_cli(*args, "--resume")
    assert done.returncode == 0, done.stderr
    _assert_same_run(_final(run_dir), uninterrupted("simclr+compmod"))


def test_checkpoint_every_n_steps_mid_epoch(tmp_path, monkeypatch):
    cfg = load_config(
        None,
        [*RUN[:2], "train.epochs=2", "train.checkpoint_every=3", *RUN[3:], f"train.run_dir={tmp_path}"],
    )
    trainer = Trainer(cfg)
    saved: list[tuple[int, int, int]] = []
    save = trainer.save

    def counting_save() -> None:
        saved.append((trainer.state.epoch, trainer.state.batch, trainer.state.step))
        save()

    monkeypatch.setattr(trainer, "save", counting_save)
    trainer.fit()
    # steps 3 and 6 mid-epoch 1, its end (8, written as epoch 1 done), 9, 12, 15 mid-epoch 2, its end
    assert saved == [(0, 3, 3), (0, 6, 6), (1, 0, 8), (1, 1, 9), (1, 4, 12), (1, 7, 15), (2, 0, 16)]


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_from_a_checkpoint_with_a_pickle_payload_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli(*_args(run_dir, "moco_v2"), "--set", "train.max_steps=1")
    assert done.returncode == 0, done.stderr
    state = torch.load(checkpoint_path(run_dir), weights_only=True)
    marker = tmp_path / "payload-ran"
    state["extra"] = _Payload(str(marker))
    torch.save(state, checkpoint_path(run_dir), pickle_module=pickle)
    resumed = run_cli(*_args(run_dir, "moco_v2"), "--resume")
    assert resumed.returncode == 2
    assert "cannot load checkpoint" in resumed.stderr and str(checkpoint_path(run_dir)) in resumed.stderr
    assert not marker.exists()
