"""The examples as a user runs them: real subprocesses from the repository root, on CPU."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "plain_pytorch_loop.py"
SMOKE = ["--steps", "3", "--batch-size", "32", "--subset", "256", "--eval-size", "200", "--device", "cpu"]
STEP_LINE = re.compile(r"^step (\d+)/(\d+)\s+(.*?)\s+\([\d.]+ s\)$")


def _run(script: Path, *args: str) -> subprocess.CompletedProcess:
    # One OpenMP thread: on shared CPUs two spinning threads per process were measured 10-40x slower.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def _parts(stdout: str) -> list[dict[str, float]]:
    """The loss parts of every `step i/n  name value ...` line."""
    rows = []
    for line in stdout.splitlines():
        if m := STEP_LINE.match(line):
            fields = m.group(3).split()
            rows.append({k: float(v) for k, v in zip(fields[::2], fields[1::2], strict=True)})
    return rows


def _compmod_lines() -> list[str]:
    return [line for line in EXAMPLE.read_text().splitlines() if "# CompMod" in line]


@pytest.mark.slow
def test_plain_loop_example_runs_with_finite_parts():
    proc = _run(EXAMPLE, *SMOKE)
    assert proc.returncode == 0, proc.stderr
    rows = _parts(proc.stdout)
    assert len(rows) >= 2, proc.stdout  # step 1 and the last step
    for row in rows:
        assert {"ssl", "mcr", "comp", "hypergrad_norm"} <= row.keys(), row
        assert all(math.isfinite(v) for v in row.values()), row
    knn = re.search(r"5-NN top-1 .*: ([\d.]+) %", proc.stdout)
    assert knn is not None and 0.0 <= float(knn.group(1)) <= 100.0, proc.stdout


def test_plain_loop_example_adds_compmod_in_at_most_10_marked_lines():
    lines = _compmod_lines()
    assert 1 <= len(lines) <= 10, lines
    assert all(line.rstrip().endswith("# CompMod") for line in lines), lines


@pytest.mark.slow
def test_plain_loop_example_without_compmod_lines_is_a_plain_simclr_loop(tmp_path):
    """Deleting the marked lines leaves a working loop: CompMod is an add-on, not a rewrite."""
    marked = set(_compmod_lines())
    stripped = tmp_path / "plain_simclr.py"
    stripped.write_text("\n".join(s for s in EXAMPLE.read_text().splitlines() if s not in marked) + "\n")
    assert "compmod.regularizers" not in stripped.read_text()
    proc = _run(stripped, "--steps", "2", *SMOKE[2:])
    assert proc.returncode == 0, proc.stderr
    rows = _parts(proc.stdout)
    assert rows and all(row.keys() == {"ssl"} and math.isfinite(row["ssl"]) for row in rows), proc.stdout


def test_plain_loop_example_uses_no_trainer_data_or_cli():
    source = EXAMPLE.read_text()
    for module in ("compmod.engine", "compmod.data", "compmod.cli"):
        assert module not in source, f"{EXAMPLE.name} must be a plain loop; it mentions {module}"
    imports = re.findall(r"^\s*(?:from|import)\s+(compmod[\w.]*)", source, flags=re.MULTILINE)
    assert imports and all(m in {"compmod.eval", "compmod.losses", "compmod.regularizers"} for m in imports)
