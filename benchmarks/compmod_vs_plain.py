"""Fashion-MNIST, small CNN: kNN top-1 of SimCLR, BYOL, Barlow Twins with and without CompMod.

    python -m benchmarks.compmod_vs_plain --seeds 0 1 2 --epochs 3 --subset 20000

Each cell is one `compmod train` run (the exact command is printed and written to the report) with
the method's preset `configs/fashion_mnist_<method>.yaml` at equal epochs; finished cells (a
results.json in their run directory) are skipped, so an interrupted sweep resumes. Writes
`<out>` (markdown: mean +- std over seeds of 5-NN top-1, weighted 200-NN top-1, and the pretraining
wall-clock) and `<runs>/summary.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import torch

METHODS = ("simclr", "byol", "barlow_twins")


def command(method: str, compmod: bool, seed: int, args: argparse.Namespace, run_dir: Path) -> list[str]:
    return [
        "compmod",
        "train",
        "--config",
        f"configs/fashion_mnist_{method}.yaml",
        "--set",
        f"compmod.enabled={'true' if compmod else 'false'}",
        "--set",
        f"train.seed={seed}",
        "--set",
        f"train.epochs={args.epochs}",
        "--set",
        f"data.subset={args.subset}",
        "--set",
        "eval.linear=false",
        "--set",
        "eval.pixel_knn=false",
        "--set",
        "train.progress=false",
        "--set",
        f"train.run_dir={run_dir}",
        "--overwrite",
        *[item for kv in args.set for item in ("--set", kv)],
    ]


def run_cell(cmd: list[str], run_dir: Path) -> dict:
    results = run_dir / "results.json"
    if not results.is_file():
        print("$", " ".join(cmd), flush=True)
        subprocess.run([sys.executable, "-m", "compmod", *cmd[1:]], check=True)
    return json.loads(results.read_text())


def fmt(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--subset", type=int, default=20000)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--set", action="append", default=[], help="extra override for every run")
    p.add_argument("--runs", default="runs/compmod_vs_plain")
    p.add_argument("--out", default="runs/compmod_vs_plain/report.md")
    args = p.parse_args()
    rows, cmds, summary = [], [], {}
    for method in args.methods:
        for compmod in (False, True):
            label = method + ("+compmod" if compmod else "")
            cells = []
            for seed in args.seeds:
                run_dir = Path(args.runs) / label / f"seed{seed}"
                cmd = command(method, compmod, seed, args, run_dir)
                cmds.append(" ".join(cmd))
                cells.append(run_cell(cmd, run_dir))
            knn = [c["knn_top1"] for c in cells]
            wknn = [c["knn_weighted_top1"] for c in cells]
            secs = [c["train_time_s"] for c in cells]
            summary[label] = {"knn_top1": knn, "knn_weighted_top1": wknn, "train_time_s": secs}
            rows.append(
                f"| {label} | {fmt(knn)} | {fmt(wknn)} | {fmt(secs)} | {', '.join(f'{v:.2f}' for v in knn)} |"
            )
    header = [
        f"Fashion-MNIST, small CNN, {args.epochs} epochs on the first {args.subset} training images, "
        f"seeds {args.seeds}; kNN over the full 60k train / 10k test features. "
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads.",
        "",
        "| method | 5-NN top-1 (%) | weighted 200-NN top-1 (%) | pretraining wall-clock (s) "
        "| 5-NN per seed |",
        "|---|---|---|---|---|",
    ]
    text = "\n".join([*header, *rows, "", "Commands:", "", "```", *cmds, "```", ""])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    Path(args.runs, "summary.json").write_text(json.dumps(summary, indent=2))
    print(text)


if __name__ == "__main__":
    main()
