"""What every benchmark shares: timing (median after warm-up, CUDA synchronised), peak memory, the
environment record, and writing `benchmarks/results/<name>.json` plus `<name>.md`.

Figures that are compared are measured side by side in one process, so their ratios hold on a noisy
machine; the 1-minute load average at start and end is recorded so a reader can judge the noise.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: torch.device | str) -> None:
    """Wait for queued CUDA work so wall-clock times are real; a no-op on CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], object],
    repeats: int,
    warmup: int,
    device: torch.device | str = "cpu",
    inner: int = 1,
) -> float:
    """Median over `repeats` timed runs (after `warmup` untimed calls) of the mean time of `inner`
    back-to-back calls of `fn`."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def _rss_peak_bytes() -> int | None:
    """Current process high-water mark of resident memory (VmHWM), Linux only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset VmHWM (writing 5 to /proc/self/clear_refs); False where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextmanager
def peak_memory(device: torch.device | str):
    """Measure the peak memory of the block: yields a dict filled with `peak_bytes` and `how` on exit.

    CUDA: `torch.cuda.max_memory_allocated` above the allocation at entry. CPU: the resident-set
    high-water mark above the resident set at entry (VmHWM after a reset), which counts every
    allocation torch makes, including oneDNN scratch buffers that a Python-level tracer misses.
    """
    device = torch.device(device)
    out: dict[str, Any] = {}
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield out
        sync(device)
        out.update(peak_bytes=torch.cuda.max_memory_allocated(device) - base, how="cuda max_memory_allocated")
        return
    if _reset_rss_peak():
        base = _rss_peak_bytes() or 0
        yield out
        out.update(peak_bytes=(_rss_peak_bytes() or 0) - base, how="VmHWM above RSS at entry")
        return
    tracemalloc.start()  # fallback: Python allocations only
    yield out
    out.update(peak_bytes=tracemalloc.get_traced_memory()[1], how="tracemalloc (python only)")
    tracemalloc.stop()


def environment(device: torch.device | str, **extra: Any) -> dict[str, Any]:
    """The facts every result file records: machine, torch version, threads, device, load."""
    device = torch.device(device)
    env = {
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "load_average_1min_start": os.getloadavg()[0],
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    env.update(extra)
    return env


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(
    name: str, env: dict[str, Any], results: Any, summary_md: str, out_dir: Path = RESULTS
) -> Path:
    """Write `<out_dir>/<name>.json` (environment + results) and `<out_dir>/<name>.md` (a heading, the
    environment line and `summary_md`); returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**env, "load_average_1min_end": os.getloadavg()[0]}
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"environment": env, "results": results}, indent=2) + "\n")
    facts = ", ".join(f"{k} {env[k]}" for k in ("device", "gpu", "machine", "torch", "threads") if k in env)
    load = f"load {env['load_average_1min_start']:.2f} -> {env['load_average_1min_end']:.2f}"
    (out_dir / f"{name}.md").write_text(f"## {name}\n\n{facts}; {load}; {env['time_utc']}\n\n{summary_md}\n")
    print(summary_md)
    print(f"wrote {path}")
    return path
