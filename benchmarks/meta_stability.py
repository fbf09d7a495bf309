"""Is CompMod's bi-level update stable at the paper presets' learning rates? 50 steps of each
`configs/paper/cifar10/*+compmod.yaml` on generated CIFAR-10-format data, at the peak learning rate.

    python -m benchmarks.meta_stability [--steps 50] [--batch 32] [--variants plain sgd adam]

Each preset runs as written (ResNet-18, its optimiser, LARS rule and lr, its CompMod keys) except: the batch
is `--batch` (CPU-sized), warm-up is 0 epochs so every step runs at the peak lr, evaluation is off, and
`compmod.meta.optimizer` / `compmod.meta.lr` take each variant (sgd: xi trained at the main lr, the
default; adam: Adam at 1e-3; plain: CompMod off, the reference a CompMod run is compared with).
Reported per run: whether every logged loss and hypergradient norm is finite, the first and last loss,
the largest hypergradient norm, and the wall-clock. Writes
`benchmarks/results/meta_stability.md`. Data: `compmod.data.datasets.synthetic.write_cifar10` (1,600
training images, class-dependent squares), in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

from compmod.config import load_config
from compmod.data.datasets.synthetic import write_cifar10
from compmod.engine.run import train_and_evaluate

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "plain": ["compmod.enabled=false"],  # the method without CompMod: the reference for "diverges"
    "sgd": ["compmod.meta.optimizer=sgd"],
    "adam": ["compmod.meta.optimizer=adam", "compmod.meta.lr=0.001"],
}


def run_one(
    preset: Path, variant: str, data: Path, out: Path, steps: int, batch: int, extra: list[str]
) -> dict:
    run_dir = out / f"{preset.stem}-{variant}"
    overrides = [
        f"data.root={data}",
        f"train.batch_size={batch}",
        f"train.max_steps={steps}",
        "train.warmup_epochs=0",
        "train.log_every=1",
        "train.progress=false",
        "eval.enabled=false",
        f"train.run_dir={run_dir}",
        *VARIANTS[variant],
        *extra,
    ]
    cfg = load_config(preset, overrides)
    t0 = time.perf_counter()
    train_and_evaluate(cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_rows = [r for r in rows if "loss" in r and "step" in r]
    losses = [float(r["loss"]) for r in steps_rows]
    norms = [float(r["hypergrad_norm"]) for r in steps_rows if "hypergrad_norm" in r]
    finite = all(math.isfinite(v) for v in [*losses, *norms])
    return {
        "preset": str(preset.relative_to(ROOT)),
        "variant": variant,
        "steps": len(losses),
        "finite": finite,
        "first_loss": losses[0] if losses else float("nan"),
        "last_loss": losses[-1] if losses else float("nan"),
        "max_loss": max(losses) if losses else float("nan"),
        "max_hypergrad_norm": max(norms) if norms else float("nan"),
        "hypergrad_logged": len(norms),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--only", nargs="*", default=[], help="presets whose file name contains one of these")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "meta_stability.md")
    args = parser.parse_args()
    presets = sorted((ROOT / "configs" / "paper" / "cifar10").glob("*+compmod.yaml"))
    if args.only:
        presets = [p for p in presets if any(o in p.name for o in args.only)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_cifar10(Path(tmp) / "cifar", per_batch=args.steps * args.batch // 5 + args.batch)
        for preset in presets:
            for variant in args.variants:
                r = run_one(preset, variant, data, Path(tmp) / "runs", args.steps, args.batch, args.extra)
                print(json.dumps(r), flush=True)
                results.append(r)
    lines = [
        "# CompMod's bi-level update at the paper presets' learning rates",
        "",
        f"`python -m benchmarks.meta_stability --steps {args.steps} --batch {args.batch}"
        + "".join(f" --set {e}" for e in args.extra)
        + "`; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Peak lr from step 0 (warm-up 0), generated CIFAR-10 data.",
        "",
        "| preset | xi optimiser | steps | all finite | loss first → last (max) | max hypergrad norm | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['preset']} | {r['variant']} | {r['steps']} | {'yes' if r['finite'] else '**no**'} | "
            f"{r['first_loss']:.4f} → {r['last_loss']:.4f} ({r['max_loss']:.4f}) | "
            f"{r['max_hypergrad_norm']:.3g} ({r['hypergrad_logged']} logged) | {r['seconds']:.0f} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
