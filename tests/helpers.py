"""Test helpers: CLI runners, a writer of CIFAR-10-format files, a skip marker for missing data."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import random
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from compmod.data.datasets.synthetic import write_cifar10  # noqa: F401 - tests import it from here

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def set_args(items: list[str]) -> list[str]:
    """`--set` arguments of the CLI for `key=value` items."""
    return [arg for item in items for arg in ("--set", item)]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `compmod ARGS` in this process, as `python -m compmod ARGS` would; returns what a subprocess
    would (exit code, stdout, stderr; an uncaught exception is its traceback on stderr and code 1).

    `compmod.__main__` is `sys.exit(compmod.cli.main())`, so calling `main` is the command minus the
    interpreter start (~3 s of CPU and ~1 GB of page faults per call, the suite's largest overhead).
    The global state a command may change is put back: RNG states, torch threads, signal handlers, cwd.
    Tests of what only a real process shows (signals, kills, torchrun, the entry point) use `run_process`.
    """
    from compmod.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        _restored_globals(),
        contextlib.chdir(cwd or os.getcwd()),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's usage errors (2) and --help (0)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["compmod", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _restored_globals():
    import signal

    states = (torch.get_rng_state(), np.random.get_state(), random.getstate(), torch.get_num_threads())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])
        torch.set_num_threads(states[3])
        for s, handler in handlers.items():
            signal.signal(s, handler)


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, filled by `build(folder)` once per test session: by whichever pytest-xdist
    worker asks first, while the others wait for it (an flock); then read-only for every test.

    For expensive module fixtures (trained runs) that tests of one module share, so that `make test` can
    spread those tests over its workers without each worker training them again."""
    base = factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built_once"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if `build` fails
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed earlier build left
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def run_process(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m compmod ARGS` in a subprocess; returns the completed process (text output)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run(
        [sys.executable, "-m", "compmod", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


requires_fmnist = pytest.mark.skipif(not FMNIST.is_dir(), reason="Debian dataset-fashion-mnist not installed")


# Per-method `--set` overrides that keep every registered method small enough for tests with batches
# of 8-16 (on top of method.proj_hidden_dim / method.proj_dim, which every method has). A method whose
# defaults need a larger batch or a big buffer gets its entry here.
METHOD_TEST_OVERRIDES: dict[str, list[str]] = {
    "byol": ["method.pred_hidden_dim=32"],
    "simsiam": ["method.pred_hidden_dim=8"],
    "moco_v2": ["method.queue_size=64"],
    "swav": ["method.num_prototypes=10"],
    "wmse": ["method.w_size=8"],
    "mec": ["method.pred_hidden_dim=8"],
}


def method_overrides(method: str) -> list[str]:
    """`--set` items for `method` in tests: its name plus its entry in METHOD_TEST_OVERRIDES."""
    return [f"method.name={method}", *METHOD_TEST_OVERRIDES.get(method, [])]
