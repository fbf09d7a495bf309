"""`make gpu-check`: does the library train on this device? One script, sections a-h, a pass/fail each.

    PYTHONPATH=src:. python3 -m benchmarks.gpu_check --device cuda|cpu|auto [--out DIR]

a. every registered method x CompMod {plain (disabled), meta.mode off, jvp, exact}, a few ResNet-18 steps;
b. precision bf16/fp16 x channels_last on/off x torch.compile on/off (compile on CUDA only), a few steps;
c. CompMod's exact and jvp hypergradients agree: float32 with TF32 off, and float64;
d. a forced fp16 overflow skips the meta step (CUDA only);
e. a 1-rank process group (NCCL on CUDA, gloo on CPU) through the library's DDP wrapper;
f. throughput of ResNet-18 at 32 px and ResNet-50 at 224 px, plain vs CompMod (bf16, channels_last);
g. host synchronisations in the Trainer's steady-state steps (`torch.cuda.set_sync_debug_mode`), a count;
h. `compmod train` (train, then evaluate) on a generated CIFAR-10 copy and a generated ImageNet JPEG folder.

Everything is built by the library's own builders (`engine/builders.py`, `engine/optim.py`,
`engine/step.py`) as the Trainer builds it; data are generated on the spot (no network, nothing
installed). Each section records its own failure (the exception's last line) and the others still run;
the exit code is 1 when a section failed. Writes DIR/gpu_check.json and DIR/gpu_check.md (default DIR:
benchmarks/results/gpu_check/<device kind>/). On CPU the sizes are tiny, so CI keeps the script working
(tests/benchmarks/test_gpu_check.py); on one H200 the whole run takes a few minutes (docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import RESULTS, environment, markdown_table

PASS, FAIL, NA, SKIPPED = "pass", "fail", "not applicable", "skipped"


@dataclass(frozen=True)
class Sizes:
    """What each section runs at on one device kind."""

    image: int  # a-d: ResNet-18 input size (CIFAR stem)
    batch: int  # a-e
    steps: int  # training steps per configuration (a, e)
    option_steps: int  # b: steps per configuration
    r18: tuple[int, int]  # f: ResNet-18 (image size, batch)
    r50: tuple[int, int]  # f: ResNet-50 (image size, batch), ImageNet stem
    warmup: int  # f: untimed steps
    timed: int  # f: timed steps (median)
    sync_steps: tuple[int, int]  # g: (warm-up steps, measured steps)
    e2e: dict[str, Any]  # h


SIZES = {
    "cuda": Sizes(
        image=32,
        batch=64,
        steps=3,
        option_steps=3,
        r18=(32, 256),
        r50=(224, 128),
        warmup=3,
        timed=10,
        sync_steps=(3, 5),
        e2e={
            "cifar_per_batch": 128,
            "cifar_test": 200,
            "cifar_size": 32,
            "batch": 64,
            "steps": 3,
            "imagenet_size": 64,
            "imagenet_per_class": (16, 4),  # JPEGs per class in train/ and val/
            "imagenet_batch": 16,
        },
    ),
    "cpu": Sizes(
        image=8,
        batch=8,
        steps=2,
        option_steps=1,  # fp16 is emulated on CPUs: one step of each
        r18=(8, 4),
        r50=(32, 2),
        warmup=1,
        timed=1,
        sync_steps=(1, 1),
        e2e={
            "cifar_per_batch": 12,
            "cifar_test": 20,
            "cifar_size": 16,
            "batch": 8,
            "steps": 2,
            "imagenet_size": 32,
            "imagenet_per_class": (10, 3),
            "imagenet_batch": 8,
        },
    ),
}
# On CPU every method's head is shrunk (the fields a method's parameters have; a new method is covered by
# the same table). On CUDA the methods run with their own defaults.
CPU_SHRINK = {
    "proj_hidden_dim": 64,
    "proj_dim": 32,
    "pred_hidden_dim": 32,
    "queue_size": 64,
    "num_prototypes": 16,
    "w_size": 8,
}


class NotApplicable(Exception):
    """Raised by a section that does not apply to this device; its message says why."""


class CheckFailed(AssertionError):
    """A section's check failed; `figures` holds what it measured up to then."""

    def __init__(self, message: str, figures: dict[str, Any]) -> None:
        super().__init__(message)
        self.figures = figures


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    work: Path  # a temporary folder for generated data and run directories

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def overrides(self, method: str = "simclr", mode: str = "jvp", *extra: str) -> list[str]:
        """`--set` items of a ResNet-18 config for `method` with CompMod `mode` ("plain": disabled)."""
        items = [
            f"method.name={method}",
            "model.backbone=resnet18",
            f"train.device={self.device}",
            f"train.batch_size={self.sizes.batch}",
            "train.progress=false",
        ]
        if mode != "plain":
            items += ["compmod.enabled=true", f"compmod.meta.mode={mode}"]
        return items + self.shrink(method) + list(extra)

    def shrink(self, method: str) -> list[str]:
        if self.cuda:
            return []
        from dataclasses import fields

        from compmod.methods import METHODS

        names = {f.name for f in fields(METHODS.get(method).params)}
        return [f"method.{k}={v}" for k, v in CPU_SHRINK.items() if k in names]


def last_line(e: BaseException) -> str:
    return traceback.format_exception_only(type(e), e)[-1].strip()


# ---- building and stepping as the Trainer does ----------------------------------------------------------
def trainer_step(cfg, channels: int, size: int, steps_per_epoch: int = 100):
    """The Trainer's construction: seed, device, then the library's `build_train_step` (the method,
    dtype, optimiser, CompMod and TrainStep)."""
    from compmod.engine.builders import build_train_step
    from compmod.engine.device import resolve_device, seed_everything

    seed_everything(cfg.train.seed)
    return build_train_step(cfg, channels, size, resolve_device(cfg.train.device), steps_per_epoch)


def view_batches(step, batch: int, size: int, dtype: torch.dtype = torch.float32, seed: int = 1):
    """Two fixed random view batches (N, 3, size, size) on the step's device, in its layout."""
    g = torch.Generator().manual_seed(seed)
    return tuple(
        step.prepare(torch.randn(batch, 3, size, size, generator=g).to(step.device, dtype)) for _ in range(2)
    )


def train_steps(step, x1: torch.Tensor, x2: torch.Tensor, n: int, lr: float) -> list[float]:
    """`n` steps as the Trainer's loop takes them (`TrainStep.step`), each step's values read; the
    losses. A non-finite loss or meta-step value raises."""
    import math

    losses = []
    for i in range(n):
        total, parts = step.step(x1, x2, lr, (i + 1) / n)
        loss = float(total)
        values = {k: float(v) for k, v in parts.items()}
        bad = {k: v for k, v in {"loss": loss, **values}.items() if not math.isfinite(v)}
        if bad:
            raise AssertionError(f"step {i}: non-finite {bad}")
        losses.append(round(loss, 5))
    return losses


def load(overrides: list[str], preset: str | None = None):
    from compmod.config import load_config

    return load_config(preset, overrides)


# ---- sections a-d ---------------------------------------------------------------------------------------
MODES = ("plain", "off", "jvp", "exact")


def check_methods(ctx: Context) -> dict[str, Any]:
    """a. Every registered method x {plain, off, jvp, exact}: `steps` ResNet-18 steps, finite."""
    from compmod.methods import METHODS

    s, runs, failed = ctx.sizes, {}, []
    for method in METHODS.names():
        for mode in MODES:
            key = f"{method}/{mode}"
            t0 = time.perf_counter()
            try:
                cfg = load(ctx.overrides(method, mode))
                step = trainer_step(cfg, 3, s.image)
                x1, x2 = view_batches(step, s.batch, s.image)
                runs[key] = {"losses": train_steps(step, x1, x2, s.steps, cfg.train.lr)}
            except Exception as e:
                runs[key], failed = {"error": last_line(e)}, [*failed, key]
            runs[key]["s"] = round(time.perf_counter() - t0, 2)
    figures = {
        "methods": METHODS.names(),
        "modes": list(MODES),
        "image": s.image,
        "batch": s.batch,
        "steps": s.steps,
        "runs": runs,
        "summary": f"{len(runs) - len(failed)}/{len(runs)} runs finite ({len(METHODS)} methods x {MODES})",
    }
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)}", figures)
    return figures


def check_speed_options(ctx: Context) -> dict[str, Any]:
    """b. SimCLR + CompMod jvp under precision x channels_last x compile, a few steps each, finite."""
    s, runs, failed = ctx.sizes, {}, []
    compiles = (False, True) if ctx.cuda else (False,)
    for precision in ("bf16", "fp16"):
        for channels_last in (False, True):
            for compile_ in compiles:
                key = f"{precision} channels_last={channels_last} compile={compile_}"
                t0 = time.perf_counter()
                try:
                    if compile_:
                        torch.compiler.reset()  # each configuration compiles its own graph
                    cfg = load(
                        ctx.overrides(
                            "simclr",
                            "jvp",
                            f"train.precision={precision}",
                            f"train.channels_last={str(channels_last).lower()}",
                            f"train.compile={str(compile_).lower()}",
                        )
                    )
                    step = trainer_step(cfg, 3, s.image)
                    x1, x2 = view_batches(step, s.batch, s.image)
                    runs[key] = {"losses": train_steps(step, x1, x2, s.option_steps, cfg.train.lr)}
                except Exception as e:
                    runs[key], failed = {"error": last_line(e)}, [*failed, key]
                runs[key]["s"] = round(time.perf_counter() - t0, 2)  # with compile: its cold compile
    figures: dict[str, Any] = {"runs": runs, "summary": f"{len(runs) - len(failed)}/{len(runs)} finite"}
    if not ctx.cuda:
        figures["compile"] = (
            "skipped on cpu: inductor's C++ build of ResNet-18's forward and backward takes minutes on a "
            "CI CPU; it runs on CUDA"
        )
        figures["summary"] += "; compile skipped on cpu (too slow)"
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(runs)} configurations failed: {', '.join(failed)}", figures)
    return figures


# exact and jvp compute the same number (meta/hypergrad.py) by different routes, so in float32 they differ
# by rounding only. Each route is a chain of about DEPTH = 3 x L rounded layer passes (forward, backward and
# the second-order pass through L weight layers), each a sum of at most n terms (the largest: a weight
# gradient of a full-resolution convolution, N x H x W, or a 3x3 convolution over 512 channels), whose
# relative error grows like sqrt(n) u (probabilistic bound, Higham & Mary 2019, u = 2^-24 the fp32 unit
# roundoff); errors add up along the chain at worst linearly, and the two routes' errors at worst add:
#     rtol32 = 2 x DEPTH x sqrt(n) x u      (ResNet-18 + heads, L = 24..27, batch 64 at 32 px: 2.2e-3..2.5e-3)
# Measured on CPU at 16 px, batch 16, every method: 3e-7..8e-7 (the tolerance is loose by ~1000x; a wrong
# term moves the result by 1e-2 or more, since the bi-level part is over 90 % of the hypergradient at
# initialisation). float64 is held to 1e-10, as tests/meta holds it.
U32 = 2.0**-24
RTOL64 = 1e-10


def fp32_rtol(layers: int, batch: int, size: int) -> float:
    n = max(batch * size * size, 512 * 9)
    return 2 * (3 * layers) * n**0.5 * U32


@contextlib.contextmanager
def tf32_off():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _norm(gs: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in gs)))


def hypergradients(ctx: Context, method: str, dtype: str) -> dict[str, Any]:
    """exact and jvp xi-hypergradients after a real forward and backward (CompMod.hypergradient, with the
    optimiser's look-ahead, as TrainStep's meta step computes them), on the same fp32-drawn batch."""
    s = ctx.sizes
    cfg = load(ctx.overrides(method, "jvp", f"train.dtype={dtype}", "train.channels_last=false"))
    step = trainer_step(cfg, 3, s.image)
    x1, x2 = view_batches(step, s.batch, s.image, getattr(torch, dtype))
    out = step.method(x1, x2)  # the real forward and backward of TrainStep.step, without its updates
    reg = step.compmod.regularize(out.h, out.z)
    step.optimizer.zero_grad(set_to_none=True)
    (out.loss + reg.loss).backward()
    grads = {}
    for mode in ("exact", "jvp"):
        step.compmod.mode = mode
        grads[mode] = step.compmod.hypergradient(
            step.method, x1, x2, cfg.train.lr, reg.context, step.lookahead
        )
    diff = _norm([a - b for a, b in zip(grads["exact"], grads["jvp"], strict=True)])
    layers = sum(  # trained weight layers (an EMA teacher's are not on the differentiated path)
        isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and m.weight.requires_grad
        for module in (step.method, step.compmod.head)
        for m in module.modules()
    )
    return {"rel_diff": diff / _norm(grads["exact"]), "norm": _norm(grads["exact"]), "layers": layers}


def check_hypergradients(ctx: Context) -> dict[str, Any]:
    """c. exact == jvp: float32 with TF32 off, to `fp32_rtol`; float64 to RTOL64."""
    from compmod.methods import METHODS

    methods = METHODS.names() if ctx.cuda else ["simclr"]  # CPU: one method, to keep CI short
    rows, failed = {}, []
    with tf32_off():
        for method in methods:
            try:
                g32 = hypergradients(ctx, method, "float32")
                g64 = hypergradients(ctx, method, "float64")
                rtol = fp32_rtol(g32["layers"], ctx.sizes.batch, ctx.sizes.image)
                rows[method] = {
                    "fp32_rel_diff": g32["rel_diff"],
                    "fp32_rtol": rtol,
                    "fp64_rel_diff": g64["rel_diff"],
                    "fp64_rtol": RTOL64,
                    "hypergrad_norm": g32["norm"],
                }
                if not (g32["rel_diff"] <= rtol and g64["rel_diff"] <= RTOL64):
                    failed.append(method)
            except Exception as e:
                rows[method], failed = {"error": last_line(e)}, [*failed, method]
        flags = {
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        }
    worst = max((r["fp32_rel_diff"] / r["fp32_rtol"] for r in rows.values() if "fp32_rtol" in r), default=0)
    figures = {
        "methods": rows,
        "tf32_during_check": flags,
        "summary": f"{len(methods) - len(failed)}/{len(methods)} agree; worst fp32 diff {worst:.1e} of rtol",
    }
    if failed:
        raise CheckFailed(f"exact != jvp for {', '.join(failed)}", figures)
    return figures


def check_fp16_overflow(ctx: Context) -> dict[str, Any]:
    """d. TrainStep with fp16: a normal step runs the meta step; a step whose fp16 gradients overflow (a loss
    scale of 2^64, far above fp16's range, as a too-large dynamic scale would be) skips it and the
    optimiser step, and leaves CompMod's head unchanged."""
    if not ctx.cuda:
        raise NotApplicable("not applicable on cpu: fp16 with a GradScaler is the CUDA recipe")
    s = ctx.sizes
    cfg = load(ctx.overrides("simclr", "jvp", "train.precision=fp16"))
    step = trainer_step(cfg, 3, s.image)
    x1, x2 = view_batches(step, s.batch, s.image)

    def one_step() -> tuple[dict[str, Any], bool, bool, int]:
        head = [p.detach().clone() for p in step.compmod.head.parameters()]
        model = [p.detach().clone() for p in step.method.parameters()]
        meta_before = step.compmod.step
        _, parts = step.step(x1, x2, cfg.train.lr)
        same_head = all(torch.equal(a, b) for a, b in zip(head, step.compmod.head.parameters(), strict=True))
        same_model = all(torch.equal(a, b) for a, b in zip(model, step.method.parameters(), strict=True))
        return parts, same_head, same_model, step.compmod.step - meta_before

    parts, same_head, tries = {}, True, 0
    while "hypergrad_norm" not in parts and tries < 10:  # the default scale (2^16) may overflow, back off
        parts, same_head, _, _ = one_step()
        tries += 1
    norm = parts.get("hypergrad_norm")
    control = {
        "hypergrad_norm": None if norm is None else float(norm),
        "head_changed": not same_head,
        "steps": tries,
    }
    step.scaler = torch.amp.GradScaler(step.device.type, init_scale=2.0**64)
    parts, same_head, same_model, ran = one_step()
    forced = {
        "meta_ran": "hypergrad_norm" in parts or ran > 0,
        "head_unchanged": same_head,
        "model_unchanged": same_model,
        "scale_after": step.scaler.get_scale(),
    }
    figures = {"control_step": control, "overflow_step": forced}
    ok_control = control["hypergrad_norm"] is not None and control["head_changed"]
    ok = (
        ok_control and not forced["meta_ran"] and same_head and same_model and forced["scale_after"] < 2.0**64
    )
    figures["summary"] = "overflow step skipped the meta and optimiser steps" if ok else "see figures"
    if not ok:
        raise CheckFailed(f"control {control}, overflow {forced}", figures)
    return figures


# ---- running the sections, writing the results -----------------------------------------------------------
def sections() -> dict[str, Callable[[Context], dict[str, Any]]]:
    from benchmarks import gpu_check_runs as runs

    return {
        "a_methods": check_methods,
        "b_speed_options": check_speed_options,
        "c_hypergradient": check_hypergradients,
        "d_fp16_overflow": check_fp16_overflow,
        "e_process_group": runs.check_process_group,
        "f_throughput": runs.check_throughput,
        "g_sync_warnings": runs.check_sync_warnings,
        "h_end_to_end": runs.check_end_to_end,
    }


def run_section(name: str, fn: Callable[[Context], dict[str, Any]], ctx: Context) -> dict[str, Any]:
    print(f"=== {name} ===", flush=True)
    t0 = time.perf_counter()
    record: dict[str, Any] = {"status": PASS, "figures": {}}
    try:
        record["figures"] = fn(ctx)
    except NotApplicable as e:
        record.update(status=NA, figures={"summary": str(e)})
    except Exception as e:
        record.update(status=FAIL, error=last_line(e), figures=getattr(e, "figures", {}))
    record["seconds"] = round(time.perf_counter() - t0, 2)
    if ctx.cuda:
        torch.cuda.empty_cache()
    print(f"{name}: {record['status']} ({record['seconds']} s) {record.get('error', '')}", flush=True)
    return record


def device_kind(device: torch.device) -> str:
    """`cpu`, or the GPU's name as a folder name (`nvidia-h200`)."""
    if device.type != "cuda":
        return device.type
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def report(result: dict[str, Any]) -> str:
    env = result["environment"]
    lines = [
        f"# GPU check: {result['device_kind']}",
        "",
        f"device {env['device']}{', ' + env['gpu'] if 'gpu' in env else ''}, torch {env['torch']}, "
        f"{env['time_utc']}; total {result['total_s']} s; "
        f"{'no section failed' if result['passed'] else 'SOME SECTIONS FAILED'}"
        f"{'' if result['complete'] else ' (INCOMPLETE: the run did not finish)'}",
        "",
    ]
    rows = [
        [name, r["status"], r["seconds"], r.get("error") or r["figures"].get("summary", "")]
        for name, r in result["sections"].items()
    ]
    lines.append(markdown_table(["section", "status", "s", "summary / error"], rows))
    lines += ["", *_details(result["sections"])]
    return "\n".join(lines) + "\n"


def _cell(run: dict[str, Any]) -> str:
    return f"FAIL: {run['error']}" if "error" in run else f"{run['losses'][-1]:.4g} ({run['s']} s)"


def _details(sections: dict[str, Any]) -> list[str]:
    out = []
    a = sections["a_methods"]["figures"]
    if "runs" in a:
        rows = [[m, *(_cell(a["runs"][f"{m}/{mode}"]) for mode in a["modes"])] for m in a["methods"]]
        out += [
            "## a. last loss per method and CompMod mode",
            "",
            markdown_table(["method", *a["modes"]], rows),
        ]
    b = sections["b_speed_options"]["figures"]
    if "runs" in b:
        rows = [[k, _cell(v)] for k, v in b["runs"].items()]
        out += ["", "## b. speed options", "", markdown_table(["configuration", "last loss (s)"], rows)]
    c = sections["c_hypergradient"]["figures"]
    if "methods" in c:
        keys = ["fp32_rel_diff", "fp32_rtol", "fp64_rel_diff"]
        rows = [
            [m, *(f"{r[k]:.2e}" if k in r else r.get("error", "") for k in keys)]
            for m, r in c["methods"].items()
        ]
        out += [
            "",
            "## c. exact vs jvp hypergradient (TF32 off)",
            "",
            markdown_table(["method", *keys], rows),
        ]
    f = sections["f_throughput"]["figures"]
    if "rows" in f:
        header = ["model", "image", "batch", "plain img/s", "CompMod jvp img/s", "CompMod / plain"]
        out += ["", "## f. throughput (median step)", "", markdown_table(header, f["rows"])]
    g = sections["g_sync_warnings"]["figures"]
    if g.get("where"):
        rows = [[where, n] for where, n in g["where"].items()]
        out += ["", "## g. synchronising calls by source line", "", markdown_table(["where", "count"], rows)]
    return out


# b runs last: its torch.compile configurations (cold compiles) hold most of a CUDA run's time, so a run cut
# short by a time limit has every other section in the files already (they are rewritten after each one).
ORDER = "acdefghb"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/gpu_check/<kind>/")
    p.add_argument("--only", nargs="+", metavar="LETTER", help="run only these sections (a-h)")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible")
    out = args.out or RESULTS / "gpu_check" / device_kind(device)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "environment": environment(device, cudnn_benchmark=torch.backends.cudnn.benchmark),
        "device_kind": device_kind(device),
        "sizes": dataclasses.asdict(SIZES[device.type]),
        "passed": True,
        "complete": False,
        "total_s": 0.0,
        "sections": {
            name: {"status": SKIPPED, "seconds": 0.0, "figures": {"summary": "not run (yet, or --only)"}}
            for name in sorted(sections())
        },
    }
    todo = [name for letter in ORDER for name in sections() if name[0] == letter]
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work, environ_set(COMPMOD_CACHE_DIR=work):
        ctx = Context(device, SIZES[device.type], Path(work))  # decoded data and caches: this run's own
        for name in todo:
            if not args.only or name[0] in args.only:
                result["sections"][name] = run_section(name, sections()[name], ctx)
                result["passed"] = all(r["status"] != FAIL for r in result["sections"].values())
                result["total_s"] = round(time.perf_counter() - t0, 1)
                write(out, result)
    result["complete"] = True
    write(out, result)
    print(report(result))
    print(f"wrote {out / 'gpu_check.json'} and gpu_check.md", flush=True)
    return 0 if result["passed"] else 1


def write(out: Path, result: dict[str, Any]) -> None:
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gpu_check.md").write_text(report(result))


@contextlib.contextmanager
def environ_set(**values: str):
    """Set environment variables for the block, then put the old values back."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    # Run the copy imported under the package's name: gpu_check_runs imports this module by that name, and
    # one copy of its classes (Context, CheckFailed, NotApplicable) must serve both.
    from benchmarks.gpu_check import main as package_main

    raise SystemExit(package_main())
