"""`make gpu-check DEVICE=cpu`: the GPU check's CPU version (benchmarks/gpu_check.py, tiny sizes) runs from
the source tree as the Makefile runs it, and every section passes or says why it does not apply to a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compmod.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {
    "a_methods",
    "b_speed_options",
    "c_hypergradient",
    "d_fp16_overflow",
    "e_process_group",
    "f_throughput",
    "g_sync_warnings",
    "h_end_to_end",
}


@pytest.mark.slow
def test_gpu_check_on_cpu_passes_every_section(tmp_path: Path) -> None:
    # one thread: the check's steps are tiny, and the suite runs beside it on the other cores
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["src", "."]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["complete"] and result["passed"] and result["device_kind"] == "cpu"
    status = {name: s["status"] for name, s in result["sections"].items()}
    assert set(status) == SECTIONS
    assert {n for n, s in status.items() if s != "pass"} == {"d_fp16_overflow"}, status
    assert result["sections"]["d_fp16_overflow"]["status"] == "not applicable"
    assert "not applicable on cpu" in result["sections"]["d_fp16_overflow"]["figures"]["summary"]

    figures = {name: s["figures"] for name, s in result["sections"].items()}
    assert figures["a_methods"]["methods"] == METHODS.names()  # every registered method, from the registry
    assert len(figures["a_methods"]["runs"]) == 4 * len(METHODS)
    assert figures["b_speed_options"]["compile"].startswith("skipped on cpu")
    simclr = figures["c_hypergradient"]["methods"]["simclr"]
    assert simclr["fp32_rel_diff"] <= simclr["fp32_rtol"] and simclr["fp64_rel_diff"] <= 1e-10
    assert figures["e_process_group"]["backend"] == "gloo"
    assert figures["e_process_group"]["forward_module"] == "DistributedDataParallel"
    assert set(figures["h_end_to_end"]["runs"]) == {"cifar10", "imagenet"}
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check: cpu")
