"""End to end: images/s of a slice of a SimCLR epoch (data -> augment -> step), compmod vs lightly.

    python -m benchmarks.e2e [--device cpu] [--steps 12] [--batch 256] [--rounds 5] [--workers 0 1 2]

Both sides train the same model on the real Fashion-MNIST training images (60,000 x 28x28 grey, held in
memory as uint8), batch 256, `--threads` torch threads (default 2) in the main process.

compmod: the real `compmod.engine.trainer.Trainer` built from `configs/fashion_mnist_simclr.yaml` (small
CNN, 512-128 projector, NT-Xent t=0.2, LARS lr 0.5 with warm-up + cosine) in a temporary run directory.
Each step indexes a shuffled batch of the uint8 tensor, makes two views with `BatchAugment` (the simclr
preset with crop scale (0.2, 1): crop, flip, jitter, no blur), runs the method and the optimizer, and logs
the loss to metrics.jsonl. A round is one `fit()` of 2 warm-up steps and a second `fit()` of `--steps`
timed steps; the figure is the `images_per_s` the Trainer itself logs for the timed `fit()` (from the
start of its epoch loop to the end of its last step, so the checkpoint each `fit()` writes afterwards is
excluded; the wall time of that `fit()` including its checkpoint is recorded as well).

lightly: lightly's standard pipeline. A torch Dataset turns each image into a PIL image (as torchvision's
FashionMNIST does) and applies `lightly.transforms.SimCLRTransform` with the preset's values: input_size
28, min_scale 0.2, hf_prob 0.5, cj_prob 0.8 with jitter (0.4, 0.4, 0.4, 0.1) (lightly's defaults at
cj_strength 0.5), random_gray_scale 0.2, gaussian_blur 0.0 and the dataset's mean/std. A
`torch.utils.data.DataLoader(batch, shuffle=True, drop_last=True, num_workers=W)` batches the views. The
step calls the backbone and projector of a model built by `compmod.engine.builders.build_method` from the
same config, `lightly.loss.NTXentLoss` (same temperature) on (z1, z2), and an optimizer from
`compmod.engine.optim.build_optimizer` with the same learning-rate schedule, then reads the loss as a
float (as the Trainer does). A round makes a fresh DataLoader iterator (so worker start-up is in the
warm-up), runs 2 warm-up steps, then times `--steps` steps; no checkpoint is written. DataLoader workers
run with 1 torch thread each (PyTorch's default) and share the machine's cores with the main process's
threads; batches they prefetch during the warm-up (at most 2 per worker) count in the timed slice, which
slightly favours lightly.

Rounds interleave the pipelines (compmod, lightly W=0, W=1, ..., then the reverse order in the next
round) so machine load hits them alike; each figure is the median over rounds of the slice's images/s.
The acceptance ratio divides compmod's figure by the best lightly worker count. The model is the same
module on both sides; the Trainer runs it with its own step options (`train.precision`, `channels_last`,
`compile`, recorded in the JSON), the lightly side as a standard loop does (fp32, NCHW, eager). Per-batch
medians of the parts (compmod's two-view augmentation, lightly's per-image data path with 0 workers,
lightly's model step) are recorded too: where the model step dominates, no data pipeline can be much
faster end to end. Writes `<out>/e2e.json` and `<out>/e2e.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightly.loss import NTXentLoss as LightlyNTXent
from lightly.transforms import SimCLRTransform
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks import harness
from compmod.config import load_config
from compmod.config.schema import Config
from compmod.data.datasets import load_dataset
from compmod.engine.builders import build_method
from compmod.engine.optim import build_optimizer
from compmod.engine.schedule import warmup_cosine
from compmod.engine.trainer import Trainer
from compmod.losses import NTXentLoss

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "fashion_mnist_simclr.yaml"
WARMUP = 2
TARGET = 1.5  # issue 4: compmod >= 1.5x lightly's best pipeline


def config(run_dir: str, args: argparse.Namespace) -> Config:
    return load_config(
        CONFIG,
        [
            f"train.batch_size={args.batch}",
            f"train.threads={args.threads}",
            f"train.device={args.device}",
            f"train.run_dir={run_dir}",
            "train.progress=false",
            "eval.enabled=false",
        ],
    )


# ---- compmod: the Trainer ----------------------------------------------------------------------------
def _fit_until(trainer: Trainer, max_steps: int) -> tuple[list[dict[str, Any]], float]:
    """`fit()` up to `max_steps` optimizer steps; returns the epoch records it logged and its wall time."""
    metrics = trainer.run_dir / "metrics.jsonl"
    offset = metrics.stat().st_size if metrics.is_file() else 0
    trainer.cfg.train.max_steps = max_steps
    start = time.perf_counter()
    trainer.fit()
    harness.sync(trainer.device)
    wall = time.perf_counter() - start
    with metrics.open() as f:
        f.seek(offset)
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if "images_per_s" in r], wall


def compmod_round(trainer: Trainer, steps: int) -> dict[str, float]:
    """2 warm-up steps, then `steps` timed steps; images/s as the Trainer logs it (checkpoint excluded)."""
    _fit_until(trainer, trainer.state.step + WARMUP)
    epochs, wall = _fit_until(trainer, trainer.state.step + steps)
    seen = sum(r["images_per_s"] * r["epoch_time_s"] for r in epochs)
    loop = sum(r["epoch_time_s"] for r in epochs)
    return {"images_per_s": seen / loop, "fit_wall_images_per_s": seen / wall, "loop_s": loop, "fit_s": wall}


# ---- lightly: per-image PIL transform, DataLoader, its NT-Xent ---------------------------------------
class PILViews(Dataset):
    """uint8 (N, 1, H, W) images -> (the transform's views of a PIL "L" image, label), like torchvision."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: SimCLRTransform) -> None:
        self.images = images[:, 0].numpy()
        self.labels = labels.numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[list[torch.Tensor], int]:
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def lightly_transform_args(cfg: Config, mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    """`SimCLRTransform` arguments that give compmod's simclr view (both views are equal in that preset)."""
    v = cfg.augment.view1
    assert v == cfg.augment.view2, "the simclr preset has two equal views"
    assert v.crop_ratio == (3 / 4, 4 / 3) and v.rotation_prob == 0 and v.cutout_prob == 0
    assert v.solarize_prob == 0, "lightly's SimCLRTransform has no solarisation"
    return {
        "input_size": cfg.data.image_size or 28,
        "cj_prob": v.jitter_prob,
        "cj_strength": 1.0,
        "cj_bright": v.brightness,
        "cj_contrast": v.contrast,
        "cj_sat": v.saturation,
        "cj_hue": v.hue,
        "min_scale": v.crop_scale[0],
        "random_gray_scale": v.grayscale_prob,
        "gaussian_blur": v.blur_prob,
        "sigmas": v.blur_sigma,
        "hf_prob": v.flip_prob,
        "normalize": {"mean": list(mean), "std": list(std)},
    }


class LightlySide:
    """The model, optimizer and loss of the lightly pipeline; `round(W)` times one slice with W workers."""

    def __init__(self, cfg: Config, dataset: PILViews, device: torch.device, steps_per_epoch: int) -> None:
        torch.manual_seed(cfg.train.seed)
        self.cfg, self.dataset, self.device = cfg, dataset, device
        self.total_steps = cfg.train.epochs * steps_per_epoch
        self.warmup_steps = round(cfg.train.warmup_epochs * steps_per_epoch)
        self.model = build_method(cfg, 1, 28).to(device)
        self.optimizer = build_optimizer([self.model], cfg.train)
        self.criterion = LightlyNTXent(temperature=cfg.method.params.temperature)
        self.step = 0

    def _train_step(self, x1: torch.Tensor, x2: torch.Tensor) -> float:
        t = self.cfg.train
        lr = warmup_cosine(self.step, self.total_steps, self.warmup_steps, t.lr, t.lr * t.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        z1 = self.model.projector(self.model.backbone(x1))
        z2 = self.model.projector(self.model.backbone(x2))
        loss = self.criterion(z1, z2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def round(self, workers: int, batch: int, steps: int) -> dict[str, float]:
        self.model.train()
        loader = DataLoader(
            self.dataset,
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
        )
        it = iter(loader)
        start = 0.0
        for i in range(WARMUP + steps):
            if i == WARMUP:
                harness.sync(self.device)
                start = time.perf_counter()
            (x1, x2), _ = next(it)
            self._train_step(x1.to(self.device, non_blocking=True), x2.to(self.device, non_blocking=True))
        harness.sync(self.device)
        elapsed = time.perf_counter() - start
        del it  # shuts the workers down before the next pipeline is timed
        return {"images_per_s": steps * batch / elapsed, "loop_s": elapsed}


# ---- checks and breakdown ----------------------------------------------------------------------------
def architecture(model: nn.Module) -> dict[str, Any]:
    parts = {"backbone": model.backbone, "projector": model.projector}
    return {
        **{f"{k}_params": sum(p.numel() for p in m.parameters()) for k, m in parts.items()},
        "shapes": [list(p.shape) for p in model.parameters()],
    }


def optimizer_facts(opt: torch.optim.Optimizer) -> dict[str, Any]:
    groups = [
        {k: v for k, v in g.items() if k not in ("params", "lr")} | {"n_params": len(g["params"])}
        for g in opt.param_groups
    ]
    return {"type": type(opt).__name__, "groups": groups}


def loss_difference(temperature: float) -> float:
    """|compmod NTXentLoss - lightly NTXentLoss| on random (64, 128) projections: the losses agree."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    return abs(float(NTXentLoss(temperature)(z1, z2)) - float(LightlyNTXent(temperature)(z1, z2)))


def breakdown(trainer: Trainer, side: LightlySide, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per batch of each pipeline's parts (medians, one thread setting): compmod's two-view
    BatchAugment, lightly's per-image transform + collate (W=0), and the model step alone."""
    images = trainer.data.images[:batch].to(trainer.device)
    gen = torch.Generator().manual_seed(0)
    augment = harness.median_seconds(
        lambda: [v(images, gen) for v in trainer.views], repeats, 1, trainer.device
    )
    loader = DataLoader(side.dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=0)
    it = iter(loader)
    data = harness.median_seconds(lambda: next(it), repeats, 1)
    x1, x2 = (v(images, gen) for v in trainer.views)
    step = harness.median_seconds(lambda: side._train_step(x1, x2), repeats, 1, trainer.device)
    return {"compmod_augment_s": augment, "lightly_data_w0_s": data, "lightly_model_step_s": step}


# ---- main ------------------------------------------------------------------------------------------------
def settings(
    args: argparse.Namespace, cfg: Config, dataset: str, transform_args: dict[str, Any]
) -> dict[str, Any]:
    speed = ("precision", "channels_last", "compile")  # the Trainer's step options, where it has them
    return {
        "config": str(CONFIG.relative_to(CONFIG.parent.parent)),
        "compmod_step_options": {k: getattr(cfg.train, k) for k in speed if hasattr(cfg.train, k)},
        "lightly_step": "fp32, default (NCHW) memory format, eager",
        "dataset": dataset,
        "batch": args.batch,
        "threads_main": args.threads,
        "threads_per_worker": 1,  # torch's DataLoader worker sets this
        "workers": args.workers,
        "warmup_steps": WARMUP,
        "timed_steps": args.steps,
        "rounds": args.rounds,
        "lightly_simclr_transform_args": transform_args,
    }


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Build both pipelines, check they train the same model, run the interleaved rounds."""
    with tempfile.TemporaryDirectory(prefix="e2e_") as tmp:
        cfg = config(tmp, args)
        trainer = Trainer(cfg)
        data = load_dataset(cfg.data.name, "pretrain", root=cfg.data.root)
        transform_args = lightly_transform_args(cfg, data.mean, data.std)
        dataset = PILViews(data.images, data.labels, SimCLRTransform(**transform_args))
        side = LightlySide(config(tmp, args), dataset, device, trainer.steps_per_epoch)
        arch, same_arch = (
            architecture(trainer.method),
            architecture(trainer.method) == architecture(side.model),
        )
        same_opt = optimizer_facts(trainer.optimizer) == optimizer_facts(side.optimizer)
        if not (same_arch and same_opt):
            raise RuntimeError("the two pipelines do not train the same model with the same optimizer")
        rounds: dict[str, list[dict[str, float]]] = {"compmod": []}
        rounds |= {f"lightly_w{w}": [] for w in args.workers}
        load: list[float] = []
        for r in range(args.rounds):
            order = list(rounds) if r % 2 == 0 else list(rounds)[::-1]  # ABC, CBA, ...: drift cancels
            for name in order:
                if name == "compmod":
                    rounds[name].append(compmod_round(trainer, args.steps))
                else:
                    rounds[name].append(
                        side.round(int(name.removeprefix("lightly_w")), args.batch, args.steps)
                    )
            load.append(os.getloadavg()[0])
            line = ", ".join(f"{k} {v[-1]['images_per_s']:.0f}" for k, v in rounds.items())
            print(f"round {r + 1}/{args.rounds}: images/s {line}; load {load[-1]:.1f}", flush=True)
        parts = breakdown(trainer, side, args.batch, 3 if args.quick else 7)
    ips = {k: statistics.median(x["images_per_s"] for x in v) for k, v in rounds.items()}
    best = max((k for k in ips if k != "compmod"), key=ips.__getitem__)
    paired = [  # each round's compmod figure over that round's best lightly figure
        c["images_per_s"] / max(rounds[k][r]["images_per_s"] for k in rounds if k != "compmod")
        for r, c in enumerate(rounds["compmod"])
    ]
    step, aug, pil = parts["lightly_model_step_s"], parts["compmod_augment_s"], parts["lightly_data_w0_s"]
    return {
        "images_per_s": ips,
        "s_per_batch": {k: args.batch / v for k, v in ips.items()},
        "compmod_fit_wall_images_per_s": statistics.median(
            x["fit_wall_images_per_s"] for x in rounds["compmod"]
        ),
        "best_lightly": best,
        "ratio_compmod_to_best_lightly": ips["compmod"] / ips[best],
        "ratio_per_round": paired,
        "ratio_median_of_rounds": statistics.median(paired),
        "load_1min_per_round": load,
        "target_ratio": TARGET,
        "meets_target": ips["compmod"] / ips[best] >= TARGET,
        # what the data path alone can give against 0 workers, at the lightly side's step time
        "ratio_bound_vs_w0": (step + pil) / (step + aug),
        "rounds": rounds,
        "per_batch_s": parts,
        "settings": settings(
            args, cfg, f"{data.name} pretrain split, {len(data.images)} images", transform_args
        ),
        "same_model": {"equal": same_arch, **{k: v for k, v in arch.items() if k != "shapes"}},
        "same_optimizer": {"equal": same_opt, **optimizer_facts(trainer.optimizer)},
        "ntxent_abs_difference": loss_difference(cfg.method.params.temperature),
    }


def summarise(res: dict[str, Any], args: argparse.Namespace) -> str:
    ips, best, parts = res["images_per_s"], res["best_lightly"], res["per_batch_s"]
    ratio = res["ratio_compmod_to_best_lightly"]
    names = {"compmod": "compmod Trainer (BatchAugment on the uint8 batch)"}
    names |= {f"lightly_w{w}": f"lightly SimCLRTransform + DataLoader, {w} workers" for w in args.workers}
    rows = [[names[k], v, v / ips[best]] for k, v in ips.items()]
    n_params = res["same_model"]["backbone_params"] + res["same_model"]["projector_params"]
    return "\n".join(
        [
            f"SimCLR on Fashion-MNIST (small CNN + projector, {n_params:,} parameters on both sides, LARS), "
            f"batch {args.batch}, {args.threads} torch threads in the main process, 1 per DataLoader worker; "
            f"median over {args.rounds} interleaved rounds of {args.steps} timed steps after {WARMUP} "
            f"warm-up steps. compmod's figure excludes its checkpoint write "
            f"({res['compmod_fit_wall_images_per_s']:,.0f} images/s with it).",
            "",
            harness.markdown_table(["pipeline", "images/s", f"vs best lightly ({best})"], rows),
            "",
            f"compmod / best lightly: **{ratio:.2f}x** (target >= {TARGET}x: "
            f"{'met' if ratio >= TARGET else 'NOT met'}); per round: "
            f"{', '.join(f'{x:.2f}x' for x in res['ratio_per_round'])} (median "
            f"{res['ratio_median_of_rounds']:.2f}x), 1-minute load after each round: "
            f"{', '.join(f'{x:.1f}' for x in res['load_1min_per_round'])}."
            f" Per batch (medians): compmod augment "
            f"{parts['compmod_augment_s'] * 1e3:.0f} ms, lightly data with 0 workers "
            f"{parts['lightly_data_w0_s'] * 1e3:.0f} ms, lightly's model step "
            f"{parts['lightly_model_step_s'] * 1e3:.0f} ms: the data path alone can make compmod at most "
            f"{res['ratio_bound_vs_w0']:.2f}x faster than lightly with 0 workers.",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=harness.RESULTS)
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps, 1 round")
    p.add_argument("--steps", type=int, default=12, help="timed steps per pipeline and round")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.rounds = 3, 1
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    env = harness.environment(device, batch=args.batch, workers=args.workers)
    results = measure(args, device)
    harness.write_result("e2e", env, results, summarise(results, args), args.out)


if __name__ == "__main__":
    main()
