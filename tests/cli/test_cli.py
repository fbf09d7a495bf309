"""The `compmod` command as a user runs it, on small real or generated data: in this process through
`compmod.cli.main` (what `python -m compmod` calls), and as a subprocess for the entry point and kills."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers import requires_fmnist, run_cli, run_process, set_args

FAST = ["--set", "train.progress=false", "--set", "method.proj_hidden_dim=64", "--set", "method.proj_dim=32"]


def _assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [s for s in proc.stderr.splitlines() if s.strip()]
    assert len(lines) == 1, proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


def test_cli_list_and_show_config():
    out = run_process("list")  # the installed entry point, once
    assert out.returncode == 0
    assert "methods: barlow_twins, byol, mec, moco_v2, simclr, simsiam, swav, vicreg, wmse" in out.stdout
    assert "fashion_mnist" in out.stdout and "resnet18" in out.stdout and "small_cnn" in out.stdout
    cfg = run_cli("show-config", "--set", "method.name=byol", "--set", "train.epochs=4")
    assert cfg.returncode == 0 and "epochs: 4" in cfg.stdout and "name: byol" in cfg.stdout


@requires_fmnist
@pytest.mark.slow
def test_cli_train_fashion_mnist_then_eval_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = run_cli(
        "train",
        "--config",
        "configs/demo.yaml",
        *FAST,
        "--set",
        f"train.run_dir={run}",
        "--set",
        "data.subset=512",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=128",
        "--set",
        "eval.train_subset=2000",
        "--set",
        "eval.test_subset=2000",
        "--set",
        "eval.linear_epochs=2",
    )
    assert proc.returncode == 0, proc.stderr
    assert "kNN top-1" in proc.stdout and "raw pixels" in proc.stdout
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 1 and results["steps"] == 4
    assert {"knn_top1", "linear_top1", "linear_top5", "pixel_knn_top1"} <= set(results)
    ev = run_cli(
        "eval",
        "knn",
        "--checkpoint",
        str(run / "checkpoints" / "last.pt"),
        "--set",
        "eval.train_subset=2000",
        "--set",
        "eval.test_subset=2000",
        "--set",
        "train.progress=false",
    )
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["knn_top1"] == pytest.approx(results["knn_top1"])
    # "all" honours the evaluation switches as training does (it ran the probe and the floor regardless)
    subsets = ["eval.train_subset=2000", "eval.test_subset=2000", "train.progress=false"]
    switched = ["eval.linear=false", "eval.pixel_knn=false", *subsets]
    ev = run_cli("eval", "all", "--checkpoint", str(run / "checkpoints" / "last.pt"), *set_args(switched))
    assert ev.returncode == 0, ev.stderr
    got = json.loads(ev.stdout)
    assert got["knn_top1"] == pytest.approx(results["knn_top1"])
    assert not {"linear_top1", "pixel_knn_top1"} & set(got)


@pytest.mark.slow
def test_cli_train_on_cifar10_format_folder(tmp_path, cifar10_root):
    run = tmp_path / "run"
    proc = run_cli(
        "train",
        "--set",
        "data.name=cifar10",
        "--set",
        f"data.root={cifar10_root}",
        *FAST,
        "--set",
        "train.epochs=2",
        "--set",
        "train.batch_size=32",
        "--set",
        f"train.run_dir={run}",
        "--set",
        "eval.linear_epochs=5",
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "cifar10" and results["steps"] == 12  # 200 images // 32 = 6 per epoch
    assert results["eval_train_size"] == 200 and results["eval_test_size"] == 60


def test_cli_unknown_config_key_suggests(tmp_path):
    proc = run_cli("train", "--set", "train.epoch=3", "--set", f"train.run_dir={tmp_path}")
    _assert_one_line_error(proc, "unknown config key train.epoch", "did you mean train.epochs?")


def test_cli_wrong_value_type(tmp_path):
    proc = run_cli("train", "--set", "train.batch_size=big")
    _assert_one_line_error(proc, "train.batch_size", "expected an integer", "'big'")


def test_cli_missing_dataset_names_paths_searched(tmp_path):
    proc = run_cli(
        "train",
        "--set",
        "data.name=cifar10",
        "--set",
        f"data.root={tmp_path / 'nowhere'}",
        "--set",
        f"train.run_dir={tmp_path / 'run'}",
    )
    _assert_one_line_error(proc, str(tmp_path / "nowhere"), "cifar")


def test_cli_unreadable_image_file(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "imgs" / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (16, 16), color=40 * i).save(tmp_path / "imgs" / "train" / cls / f"{i}.png")
    bad = tmp_path / "imgs" / "train" / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    proc = run_cli(
        "train",
        "--set",
        "data.name=folder",
        "--set",
        f"data.root={tmp_path / 'imgs'}",
        "--set",
        "data.image_size=16",
        "--set",
        f"train.run_dir={tmp_path / 'run'}",
    )
    _assert_one_line_error(proc, str(bad))


def test_cli_resume_without_checkpoint(tmp_path):
    proc = run_cli("train", "--resume", "--set", f"train.run_dir={tmp_path / 'run'}")
    _assert_one_line_error(proc, "--resume: no checkpoint at", str(tmp_path / "run"))


@requires_fmnist
@pytest.mark.slow
def test_cli_killed_run_resumes_from_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = [
        "train",
        *FAST,
        "--set",
        "data.subset=512",
        "--set",
        "train.batch_size=64",
        "--set",
        "train.epochs=4",
        "--set",
        "eval.enabled=false",
        "--set",
        f"train.run_dir={run}",
        "--set",
        "train.threads=1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "compmod", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ckpt = run / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint written before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    epochs_done = max(r["epoch"] for r in done_before if "epoch_loss" in r)
    assert epochs_done < 4, "the run finished before it could be killed"
    resumed = run_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    summaries = [r for r in records if "epoch_loss" in r]
    assert [r["epoch"] for r in summaries][-1] == 4
    assert json.loads((run / "results.json").read_text())["steps"] == 4 * (512 // 64)
    # the resumed process started after the last completed epoch: no epoch before it was redone
    resumed_epochs = [r["epoch"] for r in summaries[len([r for r in done_before if "epoch_loss" in r]) :]]
    assert resumed_epochs and resumed_epochs[0] > epochs_done - 1 and sorted(resumed_epochs) == resumed_epochs
    assert Path(run / "config.yaml").is_file()
