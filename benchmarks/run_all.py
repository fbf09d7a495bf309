"""`make bench`: run every benchmark in turn, then gather their markdown into SUMMARY.md.

    python -m benchmarks.run_all [--only step knn ...] [--device cpu|cuda] [--quick]

Each benchmark module has `main(argv) -> None` and writes `benchmarks/results/<name>.json` and `.md`
(on CUDA under `benchmarks/results/cuda/`). `--quick` passes `--quick` on (fewer repeats, smaller
slices) for a smoke run; the committed figures come from a full run.
"""

from __future__ import annotations

import argparse
import importlib
import time

from benchmarks.harness import RESULTS

BENCHMARKS = ("step", "augment", "e2e", "knn", "data_path")


def results_dir(device: str):
    return RESULTS / "cuda" if device.startswith("cuda") else RESULTS


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    out = results_dir(args.device)
    for name in args.only:
        start = time.perf_counter()
        print(f"=== benchmark {name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        module.main(["--device", args.device, "--out", str(out)] + (["--quick"] if args.quick else []))
        print(f"=== {name}: {time.perf_counter() - start:.0f} s ===", flush=True)
    parts = [(out / f"{n}.md").read_text() for n in BENCHMARKS if (out / f"{n}.md").is_file()]
    (out / "SUMMARY.md").write_text("# Benchmark summary\n\n" + "\n".join(parts))
    print(f"wrote {out / 'SUMMARY.md'}")


if __name__ == "__main__":
    main()
