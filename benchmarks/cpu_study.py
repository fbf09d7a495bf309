"""Does CompMod help at 30x the earlier CPU budget? SimCLR, BYOL, Barlow Twins on Fashion-MNIST (small CNN),
each plain, + CompMod (bi-level), + CompMod without the bi-level update, 3 seeds, 10 epochs of all 60k images.

    python -m benchmarks.cpu_study commands          # the compmod sweep commands, in order
    python -m benchmarks.cpu_study run --jobs 2      # run (or resume) every sweep that is ready
    python -m benchmarks.cpu_study report            # benchmarks/results/cpu_study.md and the curves

Stages, each a set of resumable `compmod sweep` commands (a finished cell has a results.json and is skipped,
so `run` continues where it stopped, and a stopped cell resumes from its checkpoint with its wall-clock
so far; the results, configs and metrics of finished cells are committed, checkpoints are not):

1. `tune/<method>/plain`: the method's learning rate, {1/4, 1/2, 1, 2} x its preset's, on a validation
   split (`data.validation_fraction=0.1`: 6,000 training images held out of pretraining and the kNN bank;
   the test set is never read), 3 epochs, seed 0, scored by 5-NN top-1.
2. `tune/<method>/<compmod variant>`: at the plain method's chosen rate, lambda1 x lambda2 in {0.1, 1}^2:
   the same budget of four cells per variant.
3. `main/<method>/<variant>`: the chosen values, 10 epochs on all 60k images, seeds 0, 1, 2, evaluated on
   the test set (5-NN, linear probe), the online monitor every epoch for the learning curves.
4. `equal/<method>`: the plain method for as many epochs as fit in the mean wall-clock of its bi-level
   CompMod runs (seeds 0, 1, 2).
5. `tune/<method>/compmod_every<k>`: a check of the fixed `compmod.meta.every=4`, run after the grid: bi-level
   CompMod at its chosen rate and lambdas with xi updated every step (k = 1, the paper's algorithm) and every
   8 steps, scored like stage 2 on the validation split (every 4 is stage 2's chosen cell).
6. `main/<method>/compmod_every<k>`: where stage 5 picks another k than 4, bi-level CompMod at that k on the
   test set like stage 3 (the equal wall-clock rows stay sized on every 4).

Every run: bf16 autocast of the method's forward (this CPU computes bf16 natively; CompMod's losses and its
meta step stay fp32), one torch thread (`--jobs` runs share the cores), xi updated every 4 steps in stages 1-4
(`compmod.meta.every=4`, fixed: every step costs 2.5x the time of every fourth, see step.md).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

STUDY = Path("benchmarks/results/cpu_study")
METHODS = ("simclr", "byol", "barlow_twins")
SEEDS = (0, 1, 2)
LR_FACTORS = (0.25, 0.5, 1.0, 2.0)
LAMBDAS = (0.1, 1.0)
EPOCHS, TUNE_EPOCHS, EVERY = 10, 3, 4
EVERY_CHECK = (1, 8)  # stage 5, the costliest first
COMMON = ("train.precision=bf16", "train.threads=1", "train.progress=false", "eval.pixel_knn=false")
TUNE = ("data.validation_fraction=0.1", f"train.epochs={TUNE_EPOCHS}", "eval.linear=false", "train.seed=0")
MAIN = (f"train.epochs={EPOCHS}", "eval.monitor_every=1")
VARIANTS = {
    "plain": ("compmod.enabled=false",),
    "compmod": ("compmod.enabled=true", "compmod.meta.mode=jvp", f"compmod.meta.every={EVERY}"),
    "compmod_nobilevel": ("compmod.enabled=true", "compmod.meta.mode=off"),
}


def preset(method: str) -> str:
    return f"configs/fashion_mnist_{method}.yaml"


def preset_lr(method: str) -> float:
    return float(yaml.safe_load(Path(preset(method)).read_text())["train"]["lr"])


@dataclass
class Sweep:
    """One `compmod sweep`: its output folder, fixed overrides and grid axes; `needs` must be done first."""

    out: Path
    method: str
    sets: list[str]
    grid: list[str]
    needs: list[Path] = field(default_factory=list)
    config: str | None = None  # None: the method's Fashion-MNIST preset

    def command(self) -> list[str]:
        sets = [item for kv in self.sets for item in ("--set", kv)]
        grid = [item for axis in self.grid for item in ("--grid", axis)]
        config = self.config or preset(self.method)
        return ["compmod", "sweep", "--config", config, *sets, *grid, "--out", str(self.out)]


def results(out: Path) -> dict[str, dict]:
    """cell name -> results.json of a sweep folder's finished cells."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))}


def best_cell(out: Path, metric: str = "knn_top1") -> dict:
    """The finished cell with the highest `metric` (the first in grid order on a tie) and its config."""
    cells = results(out)
    name = max(cells, key=lambda n: cells[n][metric])
    return {
        "cell": name,
        metric: cells[name][metric],
        "config": yaml.safe_load((out / name / "config.yaml").read_text()),
    }


def chosen(method: str, variant: str) -> list[str]:
    """The overrides chosen on the validation split: the plain rate, and the variant's lambdas."""
    lr = best_cell(STUDY / "tune" / method / "plain")["config"]["train"]["lr"]
    sets = [f"train.lr={lr}"]
    if variant != "plain":
        cm = best_cell(STUDY / "tune" / method / variant)["config"]["compmod"]
        sets += [f"compmod.lambda1={cm['lambda1']}", f"compmod.lambda2={cm['lambda2']}"]
    return sets


def mean_train_seconds(out: Path) -> float:
    cells = results(out)
    return sum(c["train_time_s"] for c in cells.values()) / len(cells)


def equal_epochs(method: str) -> int:
    """Epochs of the plain method that fit in the mean wall-clock of its bi-level CompMod runs."""
    main = STUDY / "main" / method
    per_epoch = mean_train_seconds(main / "plain") / EPOCHS
    return max(EPOCHS, round(mean_train_seconds(main / "compmod") / per_epoch))


def sweeps() -> list[Sweep]:
    """Every sweep of the study, tuning first; the overrides of later stages are filled in once they can
    be."""
    out: list[Sweep] = []
    seeds = f"train.seed=[{', '.join(map(str, SEEDS))}]"
    for m in METHODS:
        lrs = ", ".join(f"{preset_lr(m) * f:g}" for f in LR_FACTORS)
        plain_tune = STUDY / "tune" / m / "plain"
        out.append(Sweep(plain_tune, m, [*COMMON, *TUNE, *VARIANTS["plain"]], [f"train.lr=[{lrs}]"]))
        lam = ", ".join(f"{v:g}" for v in LAMBDAS)
        for v in ("compmod", "compmod_nobilevel"):
            grid = [f"compmod.lambda1=[{lam}]", f"compmod.lambda2=[{lam}]"]
            out.append(Sweep(STUDY / "tune" / m / v, m, [*COMMON, *TUNE, *VARIANTS[v]], grid, [plain_tune]))
        for v in VARIANTS:
            tuned = list(dict.fromkeys([STUDY / "tune" / m / "plain", STUDY / "tune" / m / v]))
            out.append(Sweep(STUDY / "main" / m / v, m, [*COMMON, *MAIN, *VARIANTS[v]], [seeds], tuned))
    for m in METHODS:
        needs = [STUDY / "main" / m / "plain", STUDY / "main" / m / "compmod"]
        out.append(Sweep(STUDY / "equal" / m, m, [*COMMON, *MAIN, *VARIANTS["plain"]], [seeds], needs))
    bilevel = ("compmod.enabled=true", "compmod.meta.mode=jvp")  # meta.every from the grid
    for k in EVERY_CHECK:
        for m in METHODS:
            out_k, tuned = STUDY / "tune" / m / f"compmod_every{k}", STUDY / "tune" / m / "compmod"
            grid = [f"compmod.meta.every=[{k}]"]
            out.append(Sweep(out_k, m, [*COMMON, *TUNE, *bilevel], grid, [tuned]))
    for m in METHODS:
        k = chosen_every(m)
        if k not in (None, EVERY):
            sets = [*COMMON, *MAIN, *bilevel, f"compmod.meta.every={k}"]
            out.append(
                Sweep(
                    STUDY / "main" / m / f"compmod_every{k}",
                    m,
                    sets,
                    [seeds],
                    [STUDY / "tune" / m / f"compmod_every{k}"],
                )
            )
    return out


def chosen_every(method: str) -> int | None:
    """Stage 5's pick of `compmod.meta.every` by validation 5-NN (None until its sweeps are finished)."""
    outs = {k: STUDY / "tune" / method / f"compmod_every{k}" for k in EVERY_CHECK}
    if not all(finished(o) for o in outs.values()):
        return None
    scores = {EVERY: best_cell(STUDY / "tune" / method / "compmod")["knn_top1"]}
    scores |= {k: best_cell(o)["knn_top1"] for k, o in outs.items()}
    return max(sorted(scores), key=lambda k: scores[k])


def resolved(s: Sweep) -> Sweep:
    """`s` with the values its stage takes from earlier ones (chosen rates and lambdas, equal epochs)."""
    stage, variant = s.out.parts[-3], s.out.name
    if stage == "tune" and variant.startswith("compmod_every"):
        return Sweep(s.out, s.method, [*s.sets, *chosen(s.method, "compmod")], s.grid, s.needs)
    if stage == "tune" and variant != "plain":
        return Sweep(s.out, s.method, [*s.sets, *chosen(s.method, "plain")], s.grid, s.needs)
    if stage == "main":
        return Sweep(s.out, s.method, [*s.sets, *chosen(s.method, variant)], s.grid, s.needs)
    if s.out.parent.name == "equal":
        extra = [*chosen(s.method, "plain"), f"train.epochs={equal_epochs(s.method)}"]
        return Sweep(s.out, s.method, [*s.sets, *extra], s.grid, s.needs)
    return s


def finished(out: Path) -> bool:
    return (out / "sweep.md").is_file()


def active_outs() -> set[Path]:
    """Output folders of `compmod sweep` processes running on this machine (Linux /proc; elsewhere none):
    a restarted driver leaves the sweeps of an earlier one alone and counts them against `--jobs`."""
    outs = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "compmod" in args and "sweep" in args and "--out" in args:
            outs.add(Path(args[args.index("--out") + 1]))
    return outs


def run(todo: list[Sweep], jobs: int, log=print) -> None:
    """Run every sweep of `todo` whose prerequisites are finished, `jobs` at a time (sweeps that another
    driver runs count), until all are finished."""
    todo = [s for s in todo if not finished(s.out)]
    mine: set[Path] = set()
    lock = threading.Condition()

    def work(s: Sweep) -> None:
        cmd = resolved(s).command()
        log(f"$ {shlex.join(cmd)}")
        s.out.mkdir(parents=True, exist_ok=True)
        with open(s.out / "sweep.log", "a") as f:
            code = subprocess.run([sys.executable, "-m", "compmod", *cmd[1:]], stdout=f, stderr=f).returncode
        with lock:
            mine.discard(s.out)
            if code != 0:
                log(f"FAILED ({code}): {s.out} (see {s.out / 'sweep.log'})")
            lock.notify_all()

    with lock:
        while todo or mine:
            others = active_outs() - mine
            todo = [s for s in todo if not finished(s.out)]
            ready = [s for s in todo if s.out not in others and all(finished(n) for n in s.needs)]
            if not ready and not mine and not others:
                raise SystemExit(f"blocked: {[str(s.out) for s in todo]} wait on sweeps that failed")
            while ready and len(mine) + len(others) < jobs:
                s = ready.pop(0)
                todo.remove(s)
                mine.add(s.out)
                threading.Thread(target=work, args=(s,), daemon=True).start()
            lock.wait(timeout=30)
    log(f"all sweeps finished ({time.strftime('%H:%M:%S')})")


def everything() -> list[Sweep]:
    """The premise test's sweeps (the cheapest) and the study's, in the order they are started: the
    premise test, tuning, the main grid, the equal wall-clock runs."""
    from benchmarks.premise import sweeps as premise_sweeps

    return [*premise_sweeps(), *sweeps()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("commands", help="print the sweep commands (later stages once their inputs exist)")
    r = sub.add_parser("run", help="run or resume every sweep, prerequisites first")
    r.add_argument("--jobs", type=int, default=2, help="sweeps at a time, one torch thread each")
    sub.add_parser("report", help="write benchmarks/results/cpu_study.md and the learning curves")
    args = p.parse_args(argv)
    if args.cmd == "commands":
        for s in everything():
            ready = all(finished(n) for n in s.needs)
            print(
                " ".join(resolved(s).command())
                if ready
                else f"# after {', '.join(map(str, s.needs))}: {s.out}"
            )
    elif args.cmd == "run":
        run(everything(), args.jobs)
    else:
        from benchmarks.cpu_study_report import write_report

        print(write_report())


if __name__ == "__main__":
    main()
