"""Each cell of a sweep as its own job (`compmod sweep|reproduce --launcher slurm|local-jobs`), via submitit.

A cell's job runs `compmod train --config <out>/.jobs/<cell>.yaml` (its resolved config), with `--resume`
when the cell has a checkpoint, so a job that was preempted or ran out of time continues where it stopped
when the sweep is launched again. A cell with `gpus` > 1 starts `torchrun --standalone --nproc_per_node=gpus`
inside its job (one node; `train.batch_size` stays the global batch). `slurm` submits to the cluster through
submitit's SLURM executor (partition, time, GPUs, CPUs, memory, account...); `local-jobs` runs the same jobs
as local processes with submitit's local executor (what the tests run).

Idempotent: a cell with results.json is never submitted, and a cell whose job is still pending or running
(recorded in `<out>/jobs.json`) is not submitted again. Logs: `<out>/.jobs/logs/<job id>_*`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compmod.errors import CompmodError, ConfigError

if TYPE_CHECKING:
    from compmod.config.schema import Config

# The config and engine modules (torch) are imported where they are used: `compmod --help` and the parser
# that adds the launcher options stay light.

LAUNCHERS = ("slurm", "local-jobs")
LIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


@dataclass
class LaunchOptions:
    """Where and how each cell's job runs. `slurm_extra`: more sbatch options (name=value), e.g.
    `constraint=a100`; `wait`: block until every job has ended, then write the table."""

    launcher: str = "local-jobs"
    gpus: int = 0  # per cell (per job); > 1: torchrun inside the job
    partition: str | None = None
    time_min: int = 24 * 60
    cpus_per_task: int = 8
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None
    slurm_extra: list[str] = field(default_factory=list)
    wait: bool = True
    poll_s: float = 5.0

    def __post_init__(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise ConfigError(
                f"--launcher {self.launcher!r} is not accepted; choose one of: local, {', '.join(LAUNCHERS)}"
            )
        if self.gpus < 0 or self.time_min < 1 or self.cpus_per_task < 1:
            raise ConfigError(
                f"--gpus {self.gpus}, --time {self.time_min}, --cpus-per-task {self.cpus_per_task}: expected "
                "gpus >= 0, time >= 1 minute, cpus >= 1"
            )


def run_cell(config_file: str, gpus: int) -> None:
    """A cell's job: `compmod train` on its config (resumed from its checkpoint when it has one); under
    torchrun when `gpus` > 1, each rank's output also kept in `<run_dir>/torchrun/`."""
    from compmod.config import load_config
    from compmod.engine.run_dir import checkpoint_path

    run_dir = Path(load_config(config_file, []).train.run_dir)
    resume = ["--resume"] if checkpoint_path(run_dir).is_file() else []
    launcher = [sys.executable]
    if gpus > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
        launcher += ["--log-dir", str(run_dir / "torchrun"), "--tee", "3"]
    subprocess.run([*launcher, "-m", "compmod", "train", "--config", config_file, *resume], check=True)


def _executor(folder: Path, options: LaunchOptions):
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            f"--launcher {options.launcher} needs the submitit package; install it with pip install "
            "'compmod[slurm]'"
        ) from None
    executor = submitit.AutoExecutor(
        folder=folder, cluster="slurm" if options.launcher == "slurm" else "local"
    )
    params: dict[str, Any] = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_task}
    if options.gpus:
        params["gpus_per_node"] = options.gpus
    if options.launcher == "slurm":
        extra = dict(item.split("=", 1) for item in options.slurm_extra)
        extra.update({k: v for k, v in (("account", options.account), ("qos", options.qos)) if v})
        params.update(slurm_partition=options.partition, slurm_additional_parameters=extra)
        if options.mem_gb:
            params["mem_gb"] = options.mem_gb
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def _alive(out: Path, job_id: str, launcher: str) -> bool:
    """Whether the recorded job is still pending or running."""
    if launcher == "local-jobs":  # a local job's id is its process id
        try:
            os.kill(int(job_id), 0)
        except (OSError, ValueError):
            return False
        return True
    import submitit

    return submitit.SlurmJob(folder=out / ".jobs" / "logs", job_id=job_id).state in LIVE


def launch_cells(
    cells: dict[str, Config], out: Path, options: LaunchOptions, log: Callable[[str], None] = print
) -> list[Any]:
    """Submit a job for each cell that has no results and no live job; record the ids in jobs.json."""
    from compmod.config.load import dump_config

    record_path = out / "jobs.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    folder = out / ".jobs"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    executor = _executor(folder / "logs", options)
    jobs = []
    for name, cfg in cells.items():
        if name in record and _alive(out, record[name], options.launcher):
            log(f"{name}: job {record[name]} still queued or running, not submitted again")
            continue
        config_file = folder / f"{name}.yaml"
        config_file.write_text(dump_config(cfg))
        executor.update_parameters(name=f"compmod-{name}")
        job = executor.submit(run_cell, str(config_file), options.gpus)
        record[name] = str(job.job_id)
        jobs.append((name, job))
        log(f"{name}: submitted job {job.job_id} ({options.launcher})")
    tmp = record_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(record_path)
    return jobs


def wait_for(jobs: list[Any], options: LaunchOptions, log: Callable[[str], None] = print) -> None:
    """Block until every job has ended; a failed one is a CompmodError naming the cells and their logs."""
    failed = []
    for name, job in jobs:
        while not job.done():
            time.sleep(options.poll_s)
        try:
            job.result()
            log(f"{name}: job {job.job_id} finished")
        except Exception as e:  # submitit re-raises the job's error with its traceback
            failed.append(f"{name} (job {job.job_id}, log {job.paths.stderr}): {str(e).splitlines()[-1]}")
    if failed:
        raise CompmodError(f"{len(failed)} cell job(s) failed: " + "; ".join(failed))


def add_launch_arguments(p: argparse.ArgumentParser) -> None:
    """The launcher options of `compmod sweep` and `compmod reproduce`."""
    g = p.add_argument_group("cell jobs (submitit)")
    g.add_argument("--launcher", choices=["local", *LAUNCHERS], default="local",
                   help="local: cells one after the other in this process (default); slurm: each cell a "
                   "Slurm job; local-jobs: each cell a local job, as on Slurm")  # fmt: skip
    g.add_argument("--gpus", type=int, default=0, help="GPUs per cell; > 1 runs torchrun inside the job")
    g.add_argument("--partition", help="Slurm partition")
    g.add_argument(
        "--time", type=int, default=24 * 60, dest="time_min", help="minutes per job (default 1440)"
    )
    g.add_argument("--cpus-per-task", type=int, default=8)
    g.add_argument("--mem-gb", type=int)
    g.add_argument("--account", help="Slurm account")
    g.add_argument("--qos", help="Slurm quality of service")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="NAME=VALUE",
                   help="another sbatch option, e.g. constraint=a100 (repeatable)")  # fmt: skip
    g.add_argument(
        "--no-wait", action="store_true", help="submit and return; run the sweep again for the table"
    )


def launch_options(args: argparse.Namespace) -> LaunchOptions | None:
    """The parsed options as LaunchOptions; None for the in-process launcher."""
    if args.launcher == "local":
        return None
    for item in args.slurm_extra:
        if "=" not in item:
            raise ConfigError(
                f"--slurm-extra {item!r} is not accepted; expected NAME=VALUE, e.g. constraint=a100"
            )
    return LaunchOptions(
        args.launcher, args.gpus, args.partition, args.time_min, args.cpus_per_task, args.mem_gb,
        args.account, args.qos, list(args.slurm_extra), wait=not args.no_wait,
    )  # fmt: skip
