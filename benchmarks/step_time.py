"""Step time of a plain SSL step vs the same step with CompMod in each meta mode (ratios in one run).

    python -m benchmarks.step_time [--method simclr] [--threads 2] [--batch 256] [--repeats 4]

Small CNN on 28x28x1 random input, the method's Fashion-MNIST preset. Each figure is the median over
`--repeats` steps after 2 warm-up steps of: forward, L_mcr, backward, meta step, optimizer step.
Writes benchmarks/results/step_<method>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from compmod.config import load_config
from compmod.engine.builders import build_compmod, build_method
from compmod.engine.optim import build_optimizer

MODES = ("plain", "off", "jvp", "exact")


def step_time(method: str, mode: str, batch: int, repeats: int, every: int = 1) -> float:
    extra = (
        []
        if mode == "plain"
        else ["compmod.enabled=true", f"compmod.meta.mode={mode}", f"compmod.meta.every={every}"]
    )
    cfg = load_config(f"configs/fashion_mnist_{method}.yaml", extra)
    torch.manual_seed(0)
    model = build_method(cfg, 1, 28)
    opt = build_optimizer([model], cfg.train)
    reg = build_compmod(cfg, model, 100)
    x1, x2 = torch.randn(batch, 1, 28, 28), torch.randn(batch, 1, 28, 28)
    times = []
    for i in range(2 + repeats):
        t0 = time.perf_counter()
        out = model(x1, x2)
        loss = out.loss if reg is None else out.loss + reg.regularize(out.h, out.z).loss
        opt.zero_grad()
        loss.backward()
        if reg is not None:
            reg.meta_step(model, x1, x2, 0.1)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="simclr")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = {mode: step_time(args.method, mode, args.batch, args.repeats) for mode in MODES}
    rows["jvp_every4"] = step_time(args.method, "jvp", args.batch, 4 * args.repeats, every=4)
    base = rows["plain"]
    result = {
        "method": args.method,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "threads": args.threads,
        "batch": args.batch,
        "model": "small_cnn 28x28x1",
        "dtype": "float32",
        "step_s": rows,
        "ratio_to_plain": {k: v / base for k, v in rows.items()},
    }
    out = Path("benchmarks/results") / f"step_{args.method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for k, v in rows.items():
        print(f"{k:12s} {v:.3f} s  {v / base:.2f}x")


if __name__ == "__main__":
    main()
