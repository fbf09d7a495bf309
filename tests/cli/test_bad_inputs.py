"""Inputs found by a fuzz that gave tracebacks (exit 1), failed only after pretraining, or were accepted
silently: each is now one line `compmod: error: ...` with exit code 2, before any work starts."""

from __future__ import annotations

import errno
import json
import os
import shutil
import types
from pathlib import Path

import pytest
import torch
from tests.helpers import FMNIST, requires_fmnist, set_args

from compmod.cli import main
from compmod.engine import run_lock
from compmod.engine.checkpoint import load_checkpoint
from compmod.engine.metrics import MetricsLogger
from compmod.engine.run_dir import checkpoint_path
from compmod.errors import FileSystemError

TINY = [
    "data.subset=64",
    "train.batch_size=32",
    "train.epochs=1",
    "method.proj_hidden_dim=32",
    "method.proj_dim=16",
    "train.progress=false",
    "eval.enabled=false",
    "train.threads=1",
]


def _one_line_error(capsys, rc: int) -> str:
    assert rc == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("compmod: error: ")
    return lines[0].removeprefix("compmod: error: ")


# (overrides, the message) for values the fuzz found; each is rejected by config validation
FUZZ = [
    (["train.log_every=0"], "config key train.log_every: 0 is not accepted; expected an integer >= 1"),
    (["method.proj_dim=0"], "config key method.proj_dim: 0 is not accepted; expected an integer >= 1"),
    (["method.proj_layers=0"], "config key method.proj_layers: 0 is not accepted; expected an integer >= 1"),
    (["compmod.eps_sq=.inf"], "config key compmod.eps_sq: inf is not accepted; expected a finite number"),
    (
        ["train.seed=12345678901234567890123"],
        "config key train.seed: 12345678901234567890123 is not accepted; expected an integer in "
        "[0, 4294967295] (2**32 - 1)",
    ),
    (
        ["train.device=cuda:abc"],
        "config key train.device: 'cuda:abc' is not accepted; expected auto, cpu, mps, cuda or cuda:N "
        "(N an integer)",
    ),
    (
        ["train.run_dir=/dev/null"],
        "config key train.run_dir: '/dev/null' is not accepted; it is not a directory (expected a directory "
        "path)",
    ),
    (
        [
            "method.name=wmse",
            "train.batch_size=64",
            "method.whiten_eps=0",
            "method.w_size=256",
            "method.proj_dim=64",
        ],
        "config key method.whiten_eps: 0.0 is not accepted; expected > 0 when a sub-batch (min(w_size, "
        "train.batch_size) = 64 rows) is not larger than method.proj_dim=64: exact whitening needs more rows "
        "than dimensions",
    ),
    (
        ["method.name=wmse", "train.batch_size=200"],
        "config key method.w_size: 128 is not accepted; expected a divisor of train.batch_size=200 "
        "(or w_size >= batch_size: the batch is whitened whole)",
    ),
    (
        ["eval.knn_temperature=0"],
        "config key eval.knn_temperature: 0.0 is not accepted; expected a float > 0",
    ),
    (["eval.batch_size=0"], "config key eval.batch_size: 0 is not accepted; expected an integer >= 1"),
    (
        ["eval.knn_weighted_k=0"],
        "config key eval.knn_weighted_k: 0 is not accepted; expected an integer >= 1",
    ),
    (["train.momentum=-5"], "config key train.momentum: -5.0 is not accepted; expected a float in [0, 1)"),
    (
        ["train.min_lr_ratio=-1"],
        "config key train.min_lr_ratio: -1.0 is not accepted; expected a float in [0, 1]",
    ),
    (
        ["compmod.lambda_warmup_epochs=-1"],
        "config key compmod.lambda_warmup_epochs: -1.0 is not accepted; expected a float >= 0",
    ),
    (
        ["compmod.order=3"],
        "config key compmod.order: 3 is not accepted; expected an even integer >= 2 (odd orders of the "
        "log-det series are unbounded below)",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), FUZZ, ids=[" ".join(o) for o, _ in FUZZ])
def test_fuzzed_value_is_one_line_before_any_work(tmp_path, capsys, overrides, message):
    run = tmp_path / "run"
    items = [*TINY, f"train.run_dir={run}", *overrides]  # a run_dir in `overrides` comes last and wins
    assert _one_line_error(capsys, main(["train", *set_args(items)])) == message
    assert not run.exists()  # nothing was started


@requires_fmnist
def test_subset_larger_than_the_dataset_names_both_numbers(tmp_path, capsys):
    run = tmp_path / "run"
    line = _one_line_error(
        capsys, main(["train", *set_args([*TINY, f"train.run_dir={run}", "data.subset=70000"])])
    )
    assert line == (
        "config key data.subset: 70000 is not accepted; the pretrain split of fashion_mnist holds only 60000 "
        "images (expected null or at most 60000)"
    )
    assert not checkpoint_path(run).exists() and not (run / "metrics.jsonl").exists()


def test_non_utf8_and_duplicate_keys_in_a_config_file(tmp_path, capsys):
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes("train:\n  run_dir: caf\xe9\n".encode("latin-1"))
    line = _one_line_error(capsys, main(["train", "--config", str(latin)]))
    assert line == (
        f"config file {str(latin)!r} is not UTF-8 text: byte 0xe9 at offset 21 cannot be decoded; "
        "save it as UTF-8"
    )
    dup = tmp_path / "dup.yaml"
    dup.write_text("train:\n  epochs: 1\ntrain:\n  epochs: 2\n")
    line = _one_line_error(capsys, main(["train", "--config", str(dup)]))
    assert line == (
        f"config file {str(dup)!r}: duplicate section train at line 3 (first given at line 1); "
        "give each key once"
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run directory after one tiny epoch (its checkpoint at epoch 1)."""
    if not FMNIST.is_dir():
        pytest.skip("Debian dataset-fashion-mnist not installed")
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *set_args([*TINY, f"train.run_dir={run}"])]) == 0
    return run


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    (to / "results.json").unlink()
    return to


@pytest.mark.parametrize("kind", ["no config", "config is a list"])
@pytest.mark.parametrize("command", ["eval", "export", "resume"])
def test_checkpoint_without_a_usable_config(trained, tmp_path, capsys, kind, command):
    run = _copy(trained, tmp_path / "run")
    path = checkpoint_path(run)
    state = load_checkpoint(path)
    if kind == "no config":
        del state["config"]
        expected = (
            f"checkpoint {str(path)!r} has no 'config' entry, so the model it holds cannot be rebuilt; "
            "it was not written by `compmod train`"
        )
    else:
        state["config"] = ["train", "data"]
        expected = (
            f"checkpoint {str(path)!r}: its 'config' entry is a list, expected a mapping of config sections"
        )
    torch.save(state, path)
    args = {
        "eval": ["eval", "knn", "--checkpoint", str(path)],
        "export": ["export", "--checkpoint", str(path), "--out", str(tmp_path / "export")],
        "resume": ["train", "--resume", "--set", f"train.run_dir={run}"],
    }[command]
    capsys.readouterr()
    assert _one_line_error(capsys, main(args)) == expected


def test_set_values_that_do_not_fit_the_checkpoint(trained, tmp_path, capsys):
    path = checkpoint_path(trained)
    capsys.readouterr()
    line = _one_line_error(
        capsys, main(["eval", "knn", "--checkpoint", str(path), "--set", "method.proj_dim=8"])
    )
    assert line == (
        f"checkpoint {str(path)!r} does not match the model built from its config with --set "
        "method.proj_dim=8: 0 missing, 0 unexpected, 2 shape mismatches (first: projector.6.weight (16, 32) "
        "in the checkpoint vs (8, 32))"
    )
    run = _copy(trained, tmp_path / "run")
    line = _one_line_error(
        capsys, main(["train", "--resume", "--set", f"train.run_dir={run}", "--set", "method.proj_layers=2"])
    )
    assert line == (
        f"checkpoint {str(checkpoint_path(run))!r} does not match the model built from the resumed config "
        "(with any --set overrides): 1 missing, 7 unexpected, 1 shape mismatches (first: projector.3.weight "
        "(32, 32) in the checkpoint vs (16, 32))"
    )


@requires_fmnist
def test_full_disk_during_a_checkpoint_write_is_one_line_and_loses_nothing(
    trained, tmp_path, capsys, monkeypatch
):
    run = _copy(trained, tmp_path / "run")
    before = checkpoint_path(run).read_bytes()
    real_save = torch.save

    def disk_full(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj:  # a checkpoint: the write fails half-way
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write(2) raises it: no file name
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full)
    line = _one_line_error(
        capsys, main(["train", "--resume", "--set", f"train.run_dir={run}", "--set", "train.epochs=2"])
    )
    assert line == f"cannot write {checkpoint_path(run)}: No space left on device (the disk is full)"
    assert checkpoint_path(run).read_bytes() == before  # the last good checkpoint is intact
    assert sorted(p.name for p in checkpoint_path(run).parent.iterdir()) == ["last.pt"]  # no temp file left
    monkeypatch.setattr(torch, "save", real_save)
    assert main(["train", "--resume", "--set", f"train.run_dir={run}", "--set", "train.epochs=2"]) == 0
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def test_full_disk_while_logging_metrics_names_the_file(tmp_path):
    logger = MetricsLogger(tmp_path)

    class Full:
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    logger._file.close()
    logger._file = Full()  # type: ignore[assignment]
    with pytest.raises(OSError) as err:
        logger.log({"loss": 1.0}, 1)
    assert str(FileSystemError.from_os_error(err.value)) == (
        f"cannot write {tmp_path / 'metrics.jsonl'}: No space left on device (the disk is full)"
    )


def test_read_only_run_dir_is_one_line(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(run_lock, "os", types.SimpleNamespace(**{**vars(os), "open": read_only}))
    line = _one_line_error(capsys, main(["train", *set_args([*TINY, f"train.run_dir={run}"])]))
    assert line == f"cannot write {run / '.lock'}: Read-only file system"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_dir_without_write_permission_is_one_line(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        line = _one_line_error(capsys, main(["train", *set_args([*TINY, f"train.run_dir={parent / 'run'}"])]))
    finally:
        parent.chmod(0o755)
    assert line == f"cannot access {parent / 'run'}: Permission denied"
