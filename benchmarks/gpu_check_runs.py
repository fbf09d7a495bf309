"""Sections e-h of `benchmarks.gpu_check`: a 1-rank process group, throughput, host synchronisations in the
Trainer's steps, and `compmod train` end to end on generated data. See gpu_check.py's docstring."""

from __future__ import annotations

import contextlib
import io
import json
import math
import socket
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from benchmarks.gpu_check import (
    CheckFailed,
    Context,
    environ_set,
    last_line,
    load,
    train_steps,
    trainer_step,
    view_batches,
)
from benchmarks.harness import median_seconds

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "paper"
CIFAR_PRESET = PRESETS / "cifar10" / "simclr+compmod.yaml"
IMAGENET_PRESET = PRESETS / "imagenet" / "simclr+compmod.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_process_group(ctx: Context) -> dict[str, Any]:
    """e. A 1-rank process group (NCCL on CUDA, gloo on CPU) set up from MASTER_ADDR / MASTER_PORT / RANK /
    WORLD_SIZE, and a few CompMod steps through the library's DDP wrapper (`engine/ddp.py`)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from compmod.distributed import is_initialized
    from compmod.engine import ddp

    s = ctx.sizes
    device = torch.device("cuda", 0) if ctx.cuda else ctx.device  # under torchrun: cuda:LOCAL_RANK
    backend = "nccl" if ctx.cuda else "gloo"
    port = free_port()
    with environ_set(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    ):
        try:
            device = ddp.init_distributed(device)  # WORLD_SIZE=1 is "not launched by torchrun": joins nothing
            joined_by_library = is_initialized()
            if not joined_by_library:
                if ctx.cuda:
                    torch.cuda.set_device(device)
                dist.init_process_group(backend, init_method="env://")
            cfg = load(ctx.overrides("simclr", "jvp", f"train.device={device}"))
            # `wrap` returns the bare module when world_size() == 1 (no DDP for one process), so while the
            # TrainStep is built it is shown a world of 2: the DDP wrapper is then the library's own (its
            # device_ids, buffer and unused-parameter settings), over the real 1-rank group.
            with mock.patch.object(ddp, "world_size", lambda: 2):
                step = trainer_step(cfg, 3, s.image)
            wrapped = isinstance(step.forward_module, DistributedDataParallel)
            x1, x2 = view_batches(step, s.batch, s.image)
            losses = train_steps(step, x1, x2, s.steps, cfg.train.lr)
            figures = {
                "backend": dist.get_backend(),
                "world_size": dist.get_world_size(),
                "port": port,
                "init_distributed_joined": joined_by_library,
                "forward_module": type(step.forward_module).__name__,
                "losses": losses,
            }
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    figures["summary"] = (
        f"{backend}, 1 rank, {type(step.forward_module).__name__}, {len(losses)} steps finite"
    )
    if not wrapped:
        raise CheckFailed("the TrainStep's forward module is not DistributedDataParallel", figures)
    return figures


def check_throughput(ctx: Context) -> dict[str, Any]:
    """f. Images/s (median step after warm-up, synchronised) of SimCLR plain vs + CompMod jvp: ResNet-18
    (CIFAR stem) and ResNet-50 (ImageNet stem); bf16 and channels_last on CUDA."""
    s = ctx.sizes
    precision = "bf16" if ctx.cuda else "auto"  # CPU: bf16 only where native (tiny sizes, code path only)
    rows, figures = [], {"precision": precision, "channels_last": True, "warmup": s.warmup, "timed": s.timed}
    for backbone, (size, batch), stem in (("resnet18", s.r18, "true"), ("resnet50", s.r50, "false")):
        ips = {}
        for label, mode in (("plain", "plain"), ("compmod", "jvp")):
            cfg = load(
                ctx.overrides(
                    "simclr",
                    mode,
                    f"model.backbone={backbone}",
                    f"model.cifar_stem={stem}",
                    f"train.batch_size={batch}",
                    f"train.precision={precision}",
                    "train.channels_last=true",
                )
            )
            step = trainer_step(cfg, 3, size)
            x1, x2 = view_batches(step, batch, size)
            last: dict[str, torch.Tensor] = {}

            def one(step=step, x1=x1, x2=x2, lr=cfg.train.lr, last=last) -> None:
                total, _ = step.step(x1, x2, lr)
                last["loss"] = total.detach()

            seconds = median_seconds(one, s.timed, s.warmup, ctx.device)
            if not math.isfinite(float(last["loss"])):
                raise CheckFailed(f"{backbone} {label}: non-finite loss {float(last['loss'])}", figures)
            ips[label] = batch / seconds
            del step, x1, x2, last
            if ctx.cuda:
                torch.cuda.empty_cache()
        rows.append(
            [backbone, size, batch, ips["plain"], ips["compmod"], f"{ips['compmod'] / ips['plain']:.2f}x"]
        )
        figures[backbone] = {"image": size, "batch": batch, "images_per_s": ips}
    figures["rows"] = rows
    figures["summary"] = "; ".join(f"{r[0]} {r[3]:,.0f} vs {r[4]:,.0f} img/s" for r in rows)
    return figures


def trainer_steps(trainer, warmup: int, measured: int, enter, leave) -> int:
    """Run `trainer.fit()` with `enter()` called at the start of step `warmup` + 1 and `leave()` at the start
    of step `warmup` + `measured` + 1 (`train.max_steps` must be that step), so the window holds `measured`
    whole iterations of the Trainer's loop (views, the step, metrics on the device). The step count is
    read off `step_fn.step`, which the loop calls once per step; returns the steps measured."""
    step, calls = trainer.step_fn.step, [0]

    def counted(*args: Any, **kwargs: Any):
        if calls[0] == warmup:
            enter()
        if calls[0] == warmup + measured:
            leave()
        calls[0] += 1
        return step(*args, **kwargs)

    trainer.step_fn.step = counted  # type: ignore[method-assign]
    trainer.fit()
    return calls[0] - warmup - 1


def check_sync_warnings(ctx: Context) -> dict[str, Any]:
    """g. `torch.cuda.set_sync_debug_mode("warn")` around steady-state steps of the Trainer (the CIFAR-10
    SimCLR + CompMod paper preset on a generated copy, no logging step inside the window): on CUDA any
    synchronising call fails the section (docs/training.md, "Host synchronisation")."""
    from compmod.data.datasets.synthetic import write_cifar10
    from compmod.engine.trainer import Trainer

    warmup, measured = ctx.sizes.sync_steps
    e2e = ctx.sizes.e2e
    root = write_cifar10(ctx.work / "g_cifar", per_batch=e2e["cifar_per_batch"], test=e2e["cifar_test"])
    cfg = load(
        [
            f"data.root={root}",
            f"data.image_size={e2e['cifar_size']}",
            f"train.device={ctx.device}",
            f"train.batch_size={e2e['batch']}",
            "train.epochs=1",
            f"train.max_steps={warmup + measured + 1}",
            f"train.log_every={warmup + measured + 1}",  # values are read after the window, not in it
            f"train.run_dir={ctx.work / 'g_run'}",
            "train.progress=false",
            *ctx.shrink("simclr"),
        ],
        str(CIFAR_PRESET),
    )
    trainer = Trainer(cfg)
    stack, caught, clock = contextlib.ExitStack(), [], {}

    def enter() -> None:
        if ctx.cuda:
            torch.cuda.synchronize()
        caught.append(stack.enter_context(warnings.catch_warnings(record=True)))
        warnings.simplefilter("always")
        if ctx.cuda:
            torch.cuda.set_sync_debug_mode("warn")
        clock["t0"] = time.perf_counter()

    def leave() -> None:
        if ctx.cuda:
            torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
        clock["s"] = time.perf_counter() - clock["t0"]
        stack.close()

    try:
        steps = trainer_steps(trainer, warmup, measured, enter, leave)
    finally:
        if ctx.cuda:
            torch.cuda.set_sync_debug_mode("default")
        stack.close()
    records = caught[0] if caught else []
    syncs = [w for w in records if "synchronizing" in str(w.message)]
    where = Counter(f"{Path(w.filename).as_posix().split('/src/')[-1]}:{w.lineno}" for w in syncs)
    figures = {
        "steps_measured": steps,
        "window_s": round(clock.get("s", float("nan")), 3),
        "sync_warnings": len(syncs) if ctx.cuda else None,
        "sync_warnings_per_step": len(syncs) / max(steps, 1) if ctx.cuda else None,
        "where": dict(where.most_common(15)),
        "other_warnings": len(records) - len(syncs),
    }
    figures["summary"] = (
        f"{len(syncs)} synchronising calls in {steps} steps"
        if ctx.cuda
        else f"the window ran over {steps} Trainer step(s); no sync debug mode on cpu"
    )
    if steps != measured:
        raise CheckFailed(f"measured {steps} steps, expected {measured}", figures)
    if ctx.cuda and syncs:
        raise CheckFailed(f"{len(syncs)} host synchronisations in {steps} steps: {dict(where)}", figures)
    return figures


# ---- h. compmod train end to end ---------------------------------------------------------------------------
WNIDS = ("n01440764", "n01443537", "n01484850", "n01491361")
JPEG_SIZES = ((96, 64), (64, 80), (120, 90), (50, 50), (200, 150), (33, 47))  # (width, height)


def write_jpeg_folder(root: Path, n_train: int = 10, n_val: int = 3, seed: int = 0) -> Path:
    """ImageNet's layout, train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, of JPEGs of mixed sizes (and one
    greyscale image per class), class i a noisy colour of its own; returns root."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, wnid in enumerate(WNIDS):
        colour = np.array([(60 * label) % 256, 255 - 50 * label, 40 + 70 * (label % 3)])
        for split, n in (("train", n_train), ("val", n_val)):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                w, h = JPEG_SIZES[(i + label) % len(JPEG_SIZES)]
                pixels = np.clip(colour + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)
                image = Image.fromarray(pixels)
                if split == "train" and i == 0:
                    image = image.convert("L")
                image.save(folder / f"{wnid}_{split}_{i}.JPEG", quality=90)
    return root


def compmod_train(preset: Path, overrides: list[str]) -> tuple[int, str]:
    """`compmod train --config PRESET --set ...` through the CLI's entry point, in this process."""
    from compmod.cli import main

    out = io.StringIO()
    argv = ["train", "--config", str(preset), *(a for item in overrides for a in ("--set", item))]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(argv)
    return code, out.getvalue()


def end_to_end(ctx: Context, name: str, preset: Path, data: list[str]) -> dict[str, Any]:
    e2e, run_dir = ctx.sizes.e2e, ctx.work / f"h_{name}"
    overrides = [
        f"train.device={ctx.device}",
        f"train.batch_size={e2e['batch']}",
        "train.epochs=1",
        f"train.max_steps={e2e['steps']}",
        f"train.run_dir={run_dir}",
        "train.progress=false",
        "eval.enabled=true",
        "eval.linear_epochs=3",
        *ctx.shrink("simclr"),
        *data,  # last: the dataset's own settings win
    ]
    t0 = time.perf_counter()
    code, output = compmod_train(preset, overrides)
    if code != 0:
        raise AssertionError(f"compmod train exited with {code}: {output.strip().splitlines()[-1:]}")
    results = json.loads((run_dir / "results.json").read_text())
    keys = ("knn_top1", "knn_weighted_top1", "linear_top1", "pixel_knn_top1")
    bad = [k for k in keys if not isinstance(results.get(k), int | float) or not math.isfinite(results[k])]
    if results.get("steps") != e2e["steps"] or bad:
        raise AssertionError(
            f"results.json: steps {results.get('steps')} (want {e2e['steps']}), missing {bad}"
        )
    return {
        "preset": str(preset.relative_to(PRESETS.parents[1])),
        "steps": results["steps"],
        **{k: results[k] for k in (*keys, "train_time_s", "eval_time_s")},
        "s": round(time.perf_counter() - t0, 2),
    }


def check_end_to_end(ctx: Context) -> dict[str, Any]:
    """h. `compmod train` (evaluation on) with the CIFAR-10 and ImageNet SimCLR + CompMod paper presets, on
    a generated CIFAR-10 copy and a generated ImageNet JPEG folder, for a few steps."""
    from compmod.data.datasets.synthetic import write_cifar10

    e2e, runs, failed = ctx.sizes.e2e, {}, []

    def cifar10() -> dict[str, Any]:
        root = write_cifar10(ctx.work / "h_cifar_data", e2e["cifar_per_batch"], e2e["cifar_test"])
        return end_to_end(
            ctx, "cifar10", CIFAR_PRESET, [f"data.root={root}", f"data.image_size={e2e['cifar_size']}"]
        )

    def imagenet() -> dict[str, Any]:
        root = write_jpeg_folder(ctx.work / "h_imagenet_data", *e2e["imagenet_per_class"])
        data = [
            f"data.root={root}",
            f"data.image_size={e2e['imagenet_size']}",
            f"train.batch_size={e2e['imagenet_batch']}",
        ]
        return end_to_end(ctx, "imagenet", IMAGENET_PRESET, data)

    jobs = {"cifar10": cifar10, "imagenet": imagenet}
    for name, job in jobs.items():
        try:
            runs[name] = job()
        except Exception as e:
            runs[name], failed = {"error": last_line(e)}, [*failed, name]
    figures = {"runs": runs, "summary": ", ".join(f"{k} {'FAIL' if k in failed else 'ok'}" for k in runs)}
    if failed:
        raise CheckFailed(f"compmod train failed on {', '.join(failed)}", figures)
    return figures
