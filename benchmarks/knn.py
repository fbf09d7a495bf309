"""kNN evaluation vs a plain float32 GEMM + topk, on learned and random-projection features (issue 12).

    python -m benchmarks.knn [--device cpu] [--repeats 3] [--quick] [--out DIR] [--no-sklearn]

What is compared, on 60,000 train x 10,000 test Fashion-MNIST features (`--quick`: the first 6,000 x 1,000)
of two kinds (`benchmarks.knn_features`): a trained encoder's (the demo preset trained for one epoch,
cached under runs/bench-knn/) and a seeded random projection of the pixels, both d = 512:

* the evaluation's two votes (`compmod.eval.protocol`): k = 5 majority and k = 200 weighted by
  exp(sim / 0.07). compmod: `knn_predict` per vote, and `knn_predict_votes` for both from one search as
  the evaluation runs them, all with the default precision ("auto");
* plain (`benchmarks.knn_reference.plain_predict`): per chunk of 1024 queries `torch.mm` of the
  normalised float32 features, `.topk(k)` and the float32 vote; for both votes one pass (one GEMM, one
  topk of k = 200, the 5-NN read off its first 5 columns), its fastest fair form;
* scikit-learn (random projection, k = 5, issue 4's reference): brute force, metric cosine, n_jobs -1.

Times are medians over `--repeats` rounds after one warm-up round; every round runs each side once, in
turn, so that load from other processes hits all alike; ratio = compmod seconds / plain seconds (goal
<= 1). Each time covers everything from the float32 features to the predictions; torch runs with as many
threads as the machine has cores.

Predictions: compmod's are compared with the rule computed independently in float64
(`knn_reference.exact_predict`; they must be equal), and so are plain's, with the reasons for each
difference (`knn_reference.explain`). `nearest_neighbours` is also checked to return exactly the rule's
neighbours, and it reports the path taken (precision, bf16 rows recomputed in float32, rows in float64).

Peak memory (trained features): both votes, compmod and plain, each once in a fresh subprocess started
with MALLOC_MMAP_THRESHOLD_=65536 so freed buffers go back to the kernel; `harness.peak_memory` measures
the call only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier

from benchmarks.harness import RESULTS, environment, markdown_table, median_seconds, peak_memory, write_result
from benchmarks.knn_features import ENCODER_DIR, ENCODER_EPOCHS, random_projection, trained_features
from benchmarks.knn_reference import exact_neighbours, exact_predict, explain, plain_predict
from compmod.eval.knn import knn_predict, knn_predict_votes, nearest_neighbours

FULL = (60_000, 10_000)
QUICK = (6_000, 1_000)
TEMPERATURE = 0.07
VOTES = {"k=5": (5, False), "k=200 weighted": (200, True)}
FEATURES = {"trained encoder": trained_features, "random projection": random_projection}
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}

Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def sides(data: Data, device: torch.device, sklearn: bool) -> dict[str, Any]:
    """name -> a call returning a list of predictions (one per vote)."""
    train, labels, test, _ = (t.to(device) for t in data)
    classes = int(labels.max()) + 1
    out: dict[str, Any] = {}
    for name, vote in VOTES.items():
        out[f"compmod {name}"] = lambda v=vote: [
            knn_predict(train, labels, test, v[0], classes, v[1], TEMPERATURE)
        ]
        out[f"plain {name}"] = lambda v=vote: plain_predict(train, labels, test, [v], classes, TEMPERATURE)
    votes = list(VOTES.values())
    out["compmod both"] = lambda: knn_predict_votes(train, labels, test, votes, classes, TEMPERATURE)
    out["plain both"] = lambda: plain_predict(train, labels, test, votes, classes, TEMPERATURE, shared=True)
    if sklearn:
        clf = KNeighborsClassifier(n_neighbors=5, algorithm="brute", metric="cosine", n_jobs=-1)
        x, y, q = (t.numpy() for t in data[:3])
        out["scikit-learn k=5"] = lambda: [torch.from_numpy(clf.fit(x, y).predict(q))]
    return out


def time_alternating(fns: dict[str, Any], repeats: int, device: torch.device) -> tuple[dict, dict]:
    """One warm-up round (whose predictions are returned), then `repeats` timed rounds of every side."""
    preds = {name: [p.cpu() for p in fn()] for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(median_seconds(fn, repeats=1, warmup=0, device=device))
    return times, preds


def check(data: Data, preds: dict[str, list[torch.Tensor]], device: torch.device) -> dict[str, Any]:
    """Each side's predictions against the rule (float64, independent), with reasons for plain's; and
    `nearest_neighbours` against the rule's neighbours, with its path."""
    train, labels, test, test_labels = data
    classes = int(labels.max()) + 1
    neighbours = exact_neighbours(train, test, max(k for k, _ in VOTES.values()))
    rule = exact_predict(neighbours, labels, list(VOTES.values()), classes, TEMPERATURE)
    exact = dict(zip(VOTES, rule, strict=True))
    out: dict[str, Any] = {}
    for j, (name, vote) in enumerate(VOTES.items()):
        found = nearest_neighbours(train.to(device), test.to(device), vote[0])
        args = (neighbours, train, test, labels, vote, classes, TEMPERATURE)
        out[name] = {
            "exact_top1": float((exact[name] == test_labels).double().mean() * 100),
            "compmod_differs_from_rule": int((preds[f"compmod {name}"][0] != exact[name]).sum()),
            "compmod_both_differs_from_rule": int((preds["compmod both"][j] != exact[name]).sum()),
            "plain_top1": float((preds[f"plain {name}"][0] == test_labels).double().mean() * 100),
            "plain_vs_rule": explain(preds[f"plain {name}"][0], exact[name], *args),
            "plain_both_differs_from_plain": int((preds["plain both"][j] != preds[f"plain {name}"][0]).sum()),
            "neighbours_equal_rule": bool(torch.equal(found.indices.cpu(), neighbours[0][:, : vote[0]])),
            "precision": found.precision,
            "fp32_rows": found.fp32_rows,
            "float64_rows": found.exact_rows,
        }
    if "scikit-learn k=5" in preds:
        sk = preds["scikit-learn k=5"][0]
        out["k=5"]["sklearn_top1"] = float((sk == test_labels).double().mean() * 100)
        out["k=5"]["sklearn_vs_rule"] = explain(
            sk, exact["k=5"], neighbours, train, test, labels, (5, False), classes, 1
        )
    return out


def measure_memory(side: str, sizes: tuple[int, int], device: torch.device) -> dict[str, Any]:
    """Peak memory of one call of `side` on the trained features after one warm-up call."""
    fn = sides(trained_features(*sizes), device, sklearn=False)[side]
    fn()
    with peak_memory(device) as mem:
        fn()
    return mem


def memory_in_subprocess(side: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.knn", "--memory-of", side, "--device", args.device]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, **MALLOC_ENV}
    out = subprocess.run(cmd + ["--quick"] * args.quick, env=env, cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"memory run of {side} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def rows_for(result: dict[str, Any]) -> list[list[Any]]:
    sec, acc = result["seconds"], result["predictions"]
    rows = []
    for name in VOTES:
        a, why = acc[name], acc[name]["plain_vs_rule"]
        reasons = ", ".join(
            f"{v} {k.replace('_', ' ')}" for k, v in why.items() if v and k not in ("differ",)
        )
        rows.append(
            [
                name,
                sec[f"compmod {name}"],
                sec[f"plain {name}"],
                sec[f"compmod {name}"] / sec[f"plain {name}"],
                f"{a['compmod_differs_from_rule']} ({a['precision']}, {a['fp32_rows']} fp32 / "
                f"{a['float64_rows']} float64 rows; neighbours = rule: {a['neighbours_equal_rule']})",
                f"{why['differ']}" + (f" ({reasons})" if reasons else ""),
                f"{a['exact_top1']:.2f} / {a['plain_top1']:.2f}",
            ]
        )
    both = max(acc[n]["compmod_both_differs_from_rule"] for n in VOTES)
    rows.append(
        ["both (evaluation)", sec["compmod both"], sec["plain both"], sec["compmod both"] / sec["plain both"]]
        + [f"{both} (one search)", "as above", ""]
    )
    return rows


def summary(results: dict[str, Any]) -> str:
    header = [
        "vote",
        "compmod s",
        "plain mm+topk s",
        "ratio",
        "compmod ≠ rule (path)",
        "plain ≠ rule (why)",
        "top-1 % rule / plain",
    ]
    parts = [
        f"kNN over {results['train']:,} train x {results['test']:,} test features (d = 512), "
        f"T = {TEMPERATURE}; median of {results['repeats']} alternating rounds; "
        "ratio = compmod / plain (goal <= 1); "
        "'≠ rule': test samples whose prediction differs from the rule computed independently in float64.\n"
    ]
    for feats, r in results["features"].items():
        parts.append(f"**{feats}** ({r['description']})\n\n" + markdown_table(header, rows_for(r)) + "\n")
        if "scikit-learn k=5" in r["seconds"]:
            sk, sec = r["predictions"]["k=5"], r["seconds"]
            why = sk["sklearn_vs_rule"]
            parts.append(
                f"scikit-learn brute force, k = 5: {sec['scikit-learn k=5']:.2f} s "
                f"({sec['scikit-learn k=5'] / sec['compmod k=5']:.1f}x compmod's time), top-1 "
                f"{sk['sklearn_top1']:.2f} %, differs from the rule on {why['differ']} samples "
                f"({why['vote_tie']} vote ties, which it gives to the smallest class).\n"
            )
    if "memory" in results:
        mem = {k: v["peak_bytes"] / 2**20 for k, v in results["memory"].items()}
        parts.append(
            "Peak memory of both votes on the trained features (fresh process): "
            + ", ".join(f"{k} {v:,.0f} MiB" for k, v in mem.items())
            + ".\n"
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--quick", action="store_true", help=f"{QUICK[0]:,} x {QUICK[1]:,}, 1 repeat")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; --quick 1)")
    p.add_argument("--no-sklearn", dest="sklearn", action="store_false", help="skip scikit-learn")
    p.add_argument("--memory-of", choices=("compmod both", "plain both"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device(args.device)
    sizes = QUICK if args.quick else FULL
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, sizes, device)))
        return
    env = environment(device, encoder=f"{ENCODER_DIR} ({ENCODER_EPOCHS} epoch)", malloc_env_memory=MALLOC_ENV)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    results: dict[str, Any] = {"train": sizes[0], "test": sizes[1], "repeats": repeats, "features": {}}
    for feats, load in FEATURES.items():
        data = load(*sizes)
        fns = sides(data, device, args.sklearn and feats == "random projection")
        times, preds = time_alternating(fns, repeats, device)
        results["features"][feats] = {
            "description": (load.__doc__ or "").strip().splitlines()[0],
            "seconds": {name: float(np.median(t)) for name, t in times.items()},
            "runs": times,
            "predictions": check(data, preds, device),
        }
    results["memory"] = {side: memory_in_subprocess(side, args) for side in ("compmod both", "plain both")}
    write_result("knn", env, results, summary(results), args.out)


if __name__ == "__main__":
    main()
