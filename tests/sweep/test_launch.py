"""`compmod sweep --launcher local-jobs`: each cell a job through submitit's local executor (the Slurm path
with local processes), end to end: four jobs for a 2 x 2 grid, the table written, a rerun submits nothing;
a cell whose job is still alive is not submitted twice; a failed job names its cell and log."""

from __future__ import annotations

import json
import os

import pytest
from tests.helpers import requires_fmnist, run_cli
from tests.sweep.test_sweep import TINY

from compmod.config import dump_config, load_config
from compmod.engine.checkpoint import load_checkpoint
from compmod.errors import CompmodError, ConfigError
from compmod.sweep import LaunchOptions
from compmod.sweep.launch import launch_cells, run_cell, wait_for

pytest.importorskip("submitit")


@requires_fmnist
def test_local_jobs_run_each_cell_once_and_a_rerun_skips_them(tmp_path) -> None:
    sets = [a for item in TINY for a in ("--set", item)]
    grid = ["--grid", "compmod.lambda1=[0.1, 1]", "--grid", "compmod.lambda2=[0.1, 1]"]
    args = ["sweep", *sets, *grid, "--out", str(tmp_path), "--launcher", "local-jobs", "--cpus-per-task", "1"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    jobs = json.loads((tmp_path / "jobs.json").read_text())
    assert len(jobs) == 4 and len(set(jobs.values())) == 4  # four cells, four jobs
    assert first.stdout.count("submitted job") == 4 and "4 of 4 cells run" in first.stdout
    for cell in jobs:
        results = json.loads((tmp_path / cell / "results.json").read_text())
        assert results["steps"] == 1 and 0 <= results["knn_top1"] <= 100
        assert (tmp_path / ".jobs" / f"{cell}.yaml").is_file()
    table = (tmp_path / "sweep.md").read_text()
    assert "| compmod.lambda1 \\ compmod.lambda2 | 0.1 | 1 |" in table
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "submitted" not in again.stdout and "0 of 4 cells run" in again.stdout
    assert json.loads((tmp_path / "jobs.json").read_text()) == jobs


def test_a_cell_with_a_live_job_is_not_submitted_again(tmp_path) -> None:
    (tmp_path / "jobs.json").write_text(json.dumps({"cell": str(os.getpid())}))  # this process: alive
    cfg = load_config(None, [*TINY, f"train.run_dir={tmp_path / 'cell'}"])
    lines: list[str] = []
    jobs = launch_cells({"cell": cfg}, tmp_path, LaunchOptions("local-jobs"), lines.append)
    assert jobs == [] and "still queued or running" in lines[0]


@requires_fmnist
def test_a_failed_job_names_its_cell_and_log(tmp_path) -> None:
    cfg = load_config(None, [*TINY, f"train.run_dir={tmp_path / 'bad'}", "data.root=/nonexistent"])
    jobs = launch_cells({"bad": cfg}, tmp_path, LaunchOptions("local-jobs", poll_s=0.5), lambda s: None)
    with pytest.raises(CompmodError, match=r"1 cell job\(s\) failed: bad \(job \d+, log .*\.err\)"):
        wait_for(jobs, LaunchOptions("local-jobs", poll_s=0.5), lambda s: None)


def test_bad_launcher_options_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="--launcher 'pbs' is not accepted"):
        LaunchOptions("pbs")
    with pytest.raises(ConfigError, match="expected gpus >= 0"):
        LaunchOptions("slurm", gpus=-1)
    done = run_cli(
        "sweep", "--grid", "train.seed=[0]", "--out", "x", "--launcher", "slurm", "--slurm-extra", "a100"
    )
    assert done.returncode == 2 and "--slurm-extra 'a100' is not accepted; expected NAME=VALUE" in done.stderr


@requires_fmnist
def test_a_cell_with_two_gpus_runs_torchrun_inside_its_job(tmp_path) -> None:
    """The job of a `--gpus 2` cell: torchrun --standalone --nproc_per_node=2 around compmod train (on this
    CPU machine two gloo processes, as on two GPUs two NCCL ones); the global batch splits over them."""
    cfg = load_config(None, [*TINY, f"train.run_dir={tmp_path / 'cell'}"])
    config_file = tmp_path / "cell.yaml"
    config_file.write_text(dump_config(cfg))
    run_cell(str(config_file), gpus=2)
    results = json.loads((tmp_path / "cell" / "results.json").read_text())
    assert results["steps"] == 1 and 0 <= results["knn_top1"] <= 100
    assert (
        load_checkpoint(tmp_path / "cell" / "checkpoints" / "last.pt")["config"]["train"]["batch_size"] == 16
    )
