"""Training-step time and peak memory: plain SSL step vs + CompMod in each meta mode, ratios in one run.

    python -m benchmarks.step [--device cpu] [--methods simclr byol barlow_twins] [--backbones ...] [--quick]

For each method (SimCLR, BYOL, Barlow Twins) and model (small CNN on 28x28x1 at batch 256 with the
Fashion-MNIST preset; ResNet-18 with the CIFAR stem on 32x32x3 at batch 64 with the CIFAR-10 preset) one
`TrainStep` (what the Trainer runs: forward, + lambda1 L_mcr, backward, meta step, optimiser step) is
timed for: plain; CompMod with meta.mode `off`, `jvp`, `exact`; `jvp` with meta.every = 4 and 8 (4 only
for ResNet-18, whose CPU steps take seconds). The configurations are timed round-robin (one cycle of
K_max steps each per round, so every-K modes contain their meta steps in the right proportion), the
figure is the median over rounds (one fewer for ResNet-18) of the mean step time in a cycle, after one
warm-up cycle. Inputs are fixed random view batches (augmentation is timed by
`benchmarks.augment`).

Peak memory is the step's working memory: the resident-set high-water mark during K steps (one meta
step) above the resident set before them (CUDA: max_memory_allocated above the allocation before
them), each configuration in a fresh child process started with MALLOC_MMAP_THRESHOLD_=65536 so that
freed tensors go back to the system at once and the resident set follows live memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.harness import RESULTS, environment, markdown_table, peak_memory, sync, write_result
from compmod.config import load_config
from compmod.engine.builders import build_train_step

METHODS = ("simclr", "byol", "barlow_twins")
BACKBONES = {  # name -> (preset file pattern, channels, size, batch)
    "small_cnn": ("configs/fashion_mnist_{}.yaml", 1, 28, 256),
    "resnet18": ("configs/cifar10_{}.yaml", 3, 32, 64),
}
# ResNet-18 steps take seconds on a CPU: its every-8 row is left out there so a cycle is 4 steps.
MODE_SETS = {"small_cnn": None, "resnet18": ("plain", "off", "jvp", "jvp_every4", "exact")}
MODES = {  # name -> (meta.mode or None for plain, meta.every)
    "plain": (None, 1),
    "off": ("off", 1),
    "jvp": ("jvp", 1),
    "jvp_every4": ("jvp", 4),
    "jvp_every8": ("jvp", 8),
    "exact": ("exact", 1),
}


def modes_for(backbone: str) -> list[str]:
    return list(MODE_SETS[backbone] or MODES)


def cycle_length(modes) -> int:
    """Steps per timed cycle: the largest every-K among `modes` (all K are powers of two)."""
    return max(MODES[m][1] for m in modes)


def build_step(method: str, backbone: str, mode: str, device: torch.device, overrides=()):
    """A TrainStep and its fixed inputs for one configuration (seeded: every mode starts equal)."""
    pattern, channels, size, batch = BACKBONES[backbone]
    meta_mode, every = MODES[mode]
    extra = [f"model.backbone={backbone}", *overrides]
    if meta_mode is not None:
        extra += ["compmod.enabled=true", f"compmod.meta.mode={meta_mode}", f"compmod.meta.every={every}"]
    cfg = load_config(pattern.format(method), extra)
    torch.manual_seed(0)
    step = build_train_step(cfg, channels, size, torch.device(device), steps_per_epoch=100)
    g = torch.Generator().manual_seed(1)
    x1, x2 = (
        step.prepare(torch.randn(batch, channels, size, size, generator=g).to(device)) for _ in range(2)
    )
    lr = cfg.train.lr

    def one_step() -> None:
        step.step(x1, x2, lr)

    return one_step, batch


def repeat(fn, n: int):
    def cycle() -> None:
        for _ in range(n):
            fn()

    return cycle


OPTIONS = {  # the speed options' defaults are chosen from these rows (small CNN, SimCLR)
    "channels_last=false": ("plain", ["train.channels_last=false"]),
    "channels_last=true": ("plain", ["train.channels_last=true"]),
    "jvp channels_last=false": ("jvp", ["train.channels_last=false"]),
    "jvp channels_last=true": ("jvp", ["train.channels_last=true"]),
    "compile=true": ("plain", ["train.compile=true"]),
    "precision=bf16": ("plain", ["train.precision=bf16"]),
}


def time_configs(
    steps: dict[str, object],
    rounds: int,
    device: torch.device,
    cycle: int,
    warmup_s: dict[str, float] | None = None,
) -> dict[str, float]:
    """Median over `rounds` of the mean step time in a cycle of `cycle` steps per configuration, timed
    round-robin; the warm-up cycle's wall time goes into `warmup_s` (it holds torch.compile's cold
    compile)."""
    cycles = {k: repeat(fn, cycle) for k, fn in steps.items()}
    for name, fn in cycles.items():
        start = time.perf_counter()
        fn()  # warm-up cycle
        if warmup_s is not None:
            warmup_s[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {k: [] for k in cycles}
    for _ in range(rounds):
        for name, fn in cycles.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / cycle)
    return {k: statistics.median(v) for k, v in times.items()}


def memory_child(method: str, backbone: str, mode: str, device: str) -> None:
    """Child process: print the working-memory peak (bytes) of one configuration as JSON."""
    dev = torch.device(device)
    step, _ = build_step(method, backbone, mode, dev)
    cycle = repeat(step, MODES[mode][1])  # every-K: the measured K steps hold one meta step
    cycle()  # warm-up: optimiser states and allocator pools exist before the measurement
    with peak_memory(dev) as peak:
        cycle()
    print(json.dumps(peak))


def measure_memory(method: str, backbone: str, mode: str, device: str) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.step",
        "--memory-child",
        method,
        backbone,
        mode,
        "--device",
        device,
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=Path.cwd())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--quick", action="store_true", help="1 round, small CNN, SimCLR only")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=list(BACKBONES))
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--merge", action="store_true", help="keep rows of step.json not measured in this run")
    p.add_argument("--no-options", action="store_true", help="skip the speed-option rows")
    p.add_argument("--memory-child", nargs=3, metavar=("METHOD", "BACKBONE", "MODE"))
    args = p.parse_args(argv)
    if args.memory_child:
        memory_child(*args.memory_child, args.device)
        return
    device = torch.device(args.device)
    if args.quick:
        args.rounds, args.methods, args.backbones, args.no_options = 1, ["simclr"], ["small_cnn"], True
    env = environment(device, rounds=args.rounds, dtype="float32")
    rows = []
    for backbone in args.backbones:
        for method in args.methods:
            steps, batch, modes = {}, BACKBONES[backbone][3], modes_for(backbone)
            for mode in modes:
                steps[mode], batch = build_step(method, backbone, mode, device)
            rounds = args.rounds if backbone == "small_cnn" else max(1, args.rounds - 1)
            secs = time_configs(steps, rounds, device, cycle_length(modes))
            mem = (
                {} if args.no_memory else {m: measure_memory(method, backbone, m, args.device) for m in modes}
            )
            row = {
                "method": method,
                "model": backbone,
                "batch": batch,
                "step_s": secs,
                "rounds": rounds,
                "cycle_steps": cycle_length(modes),
                "time_ratio": {m: secs[m] / secs["plain"] for m in modes},
            }
            if mem:
                row["peak_bytes"] = {m: mem[m]["peak_bytes"] for m in modes}
                row["memory_ratio"] = {m: mem[m]["peak_bytes"] / mem["plain"]["peak_bytes"] for m in modes}
                row["memory_how"] = mem["plain"]["how"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    previous = _previous(args.out) if args.merge else {}
    measured = {(r["method"], r["model"]) for r in rows}
    rows = [r for r in previous.get("modes", []) if (r["method"], r["model"]) not in measured] + rows
    summary = mode_table(rows) + "\n\n" + acceptance(rows)
    options = previous.get("options", {})
    if not args.no_options and device.type in ("cpu", "cuda"):
        options = measure_options(device, args.rounds)
    if options:
        base = options["step_s"]["channels_last=false"]
        summary += (
            "\n\nSpeed options (SimCLR, small CNN, batch 256; time relative to the plain fp32 step):\n\n"
        )
        summary += markdown_table(
            ["option", "step s", "relative", "first cycle s"],
            [[k, v, f"{v / base:.2f}x", options["warmup_s"][k]] for k, v in options["step_s"].items()],
        )
    write_result("step", env, {"modes": rows, "options": options}, summary, args.out)


def _previous(out: Path) -> dict:
    path = out / "step.json"
    return json.loads(path.read_text())["results"] if path.is_file() else {}


def mode_table(rows: list[dict]) -> str:
    header = ["method", "model", "batch", "mode", "step s", "time / plain", "peak MiB", "memory / plain"]
    table = []
    for row in rows:
        for mode, secs in row["step_s"].items():
            mem = "peak_bytes" in row
            table.append(
                [
                    row["method"],
                    row["model"],
                    row["batch"],
                    mode,
                    secs,
                    f"{row['time_ratio'][mode]:.2f}x",
                    f"{row['peak_bytes'][mode] / 2**20:,.0f}" if mem else "-",
                    f"{row['memory_ratio'][mode]:.2f}x" if mem else "-",
                ]
            )
    return markdown_table(header, table)


def acceptance(rows: list[dict]) -> str:
    """Issue 4's goals on the small CNN: jvp <= 2.2x time and <= 1.2x memory, jvp every 4 <= 1.35x."""
    lines = ["Issue 4 goals (small CNN):"]
    for row in rows:
        if row["model"] != "small_cnn":
            continue
        t, m = row["time_ratio"], row.get("memory_ratio", {})

        def goal(value: float, limit: float) -> str:
            return f"{value:.2f}x (goal <= {limit}: {'met' if value <= limit else 'NOT met'})"

        lines.append(
            f"- {row['method']}: jvp time {goal(t['jvp'], 2.2)}, jvp memory "
            f"{goal(m.get('jvp', float('nan')), 1.2)}; every 4 {goal(t['jvp_every4'], 1.35)}; "
            f"every 8 {t['jvp_every8']:.2f}x; exact {t['exact']:.2f}x time, "
            f"{m.get('exact', float('nan')):.2f}x memory"
        )
    return "\n".join(lines)


def measure_options(device: torch.device, rounds: int) -> dict:
    steps, warmup = {}, {}
    for name, (mode, overrides) in OPTIONS.items():
        if name == "precision=bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            continue
        steps[name], _ = build_step("simclr", "small_cnn", mode, device, overrides)
    slow = {}
    if device.type == "cpu":  # bf16 autocast is >10x slower on a CPU without native bf16: one round only
        slow = {"precision=bf16": steps.pop("precision=bf16")}
    secs = time_configs(steps, rounds, device, 4, warmup)
    secs.update(time_configs(slow, 1, device, 4, warmup))
    return {"step_s": secs, "warmup_s": warmup}


if __name__ == "__main__":
    main()
