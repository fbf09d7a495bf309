"""Images/s of compmod's batched augmentation vs torchvision v2 per image and vs kornia, and its share of a
training step.

    python -m benchmarks.augment [--device cpu] [--threads N] [--repeats 7] [--quick] [--out DIR]

Throughput. Each side turns one batch of 256 decoded uint8 images into TWO normalised float32 views with
SimCLR's augmentation (random resized crop, scale (0.08, 1), aspect (3/4, 4/3); horizontal flip p 0.5;
colour jitter (0.4, 0.4, 0.4, 0.1) with p 0.8; greyscale p 0.2; normalisation), and images/s counts source
images (each yields two views). Cases: 28x28x1 (the first 256 Fashion-MNIST test images when the files are
found, else random uint8) and 32x32x3 (random uint8).

- torchvision: `transforms.v2` applied per image to PIL images (RandomResizedCrop, RandomHorizontalFlip,
  RandomApply(ColorJitter, 0.8), RandomGrayscale, ToImage, ToDtype, Normalize), results stacked; on CPU
  only, as a PIL pipeline runs in a data-loader worker.
- kornia: the same steps batched with `kornia.augmentation` (RandomResizedCrop, RandomHorizontalFlip,
  ColorJitter(p=0.8), RandomGrayscale(p=0.2), Normalize) on the batch, its timing including the uint8 -> float
  conversion. On 1-channel images kornia's ColorJitter refuses saturation and hue, so there it runs with
  brightness and contrast only - what compmod's jitter does on 1 channel anyway.
- compmod: `BatchAugment` with the `simclr` preset, one module per view, on the uint8 batch on `--device`.
  On CPU with more than one thread it is timed on one thread too: the torchvision pipeline uses one core
  (PIL), so that ratio is the per-core one.

Share of a training step. SimCLR with the small CNN on 28x28x1 at batch 256 (config
`configs/fashion_mnist_simclr.yaml`: the simclr preset with crop scale (0.2, 1), the views built as the
Trainer builds them, with `build_augmentations`), and, as information, ResNet-18 (CIFAR stem,
`configs/cifar10_simclr.yaml`) on 32x32x3 at batch 64. As in one `Trainer` step: (a) the two views,
`step_fn.prepare(views[i](x, generator))`, and (b) `TrainStep.step` (forward, loss, backward, meta
step, optimizer step, `after_optimizer_step`) and reading its loss, on fixed views, with the
config's speed options (precision, channels_last, compile). share = a / (a + b).

Every figure is the median of `--repeats` timed runs after warm-up; the figures that are compared run in
one process, their timed runs interleaved round by round, so a load change on a shared machine hits them
alike. Writes `<out>/augment.json` and `augment.md`.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kornia
import kornia.augmentation as K
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from benchmarks.harness import RESULTS, environment, markdown_table, median_seconds, sync, write_result
from compmod.config import load_config
from compmod.config.augment import ViewAugment
from compmod.config.augment_presets import augment_preset
from compmod.data.augment import BatchAugment
from compmod.data.datasets.load import load_dataset
from compmod.engine.builders import build_augmentations, build_train_step
from compmod.errors import CompmodError

BATCH = 256
CASES = ((28, 1), (32, 3))  # Fashion-MNIST-like, CIFAR-like
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# (config, image size, channels, batch) of the step-share cases; the first one is the acceptance case.
STEP_CASES = (("fashion_mnist_simclr.yaml", 28, 1, 256), ("cifar10_simclr.yaml", 32, 3, 64))


def images(
    size: int, channels: int, n: int = BATCH
) -> tuple[torch.Tensor, tuple[float, ...], tuple[float, ...], str]:
    """uint8 (n, channels, size, size), per-channel mean and std, and where the images come from."""
    if (size, channels) == (28, 1):
        try:
            ds = load_dataset("fashion_mnist", "test")
            return ds.images[:n].contiguous(), tuple(ds.mean), tuple(ds.std), "fashion_mnist test[:n]"
        except CompmodError:
            pass
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    return x, (0.5,) * channels, (0.25,) * channels, "random uint8"


def torchvision_pipeline(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def kornia_pipeline(size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Sequential:
    """SimCLR's pipeline in `kornia.augmentation`; brightness and contrast only on 1 channel."""
    colour = len(mean) == 3
    return nn.Sequential(
        K.RandomResizedCrop((size, size), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4 if colour else 0.0, 0.1 if colour else 0.0, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.Normalize(mean=torch.tensor(mean), std=torch.tensor(std)),
    )


def interleaved(
    timed: list[tuple[Callable[[], object], int, int]], repeats: int, warmup: int, device: torch.device
) -> list[float]:
    """Median seconds per call of each (fn, inner, threads): `warmup` calls of each, then `repeats` rounds
    in which each fn runs `inner` times back to back on `threads` threads. Interleaving the rounds lets a
    load change on the shared machine hit every figure alike, so their ratios hold."""
    restore = torch.get_num_threads()
    for fn, _, threads in timed:
        torch.set_num_threads(threads)
        for _ in range(warmup):
            fn()
    sync(device)
    rounds: list[list[float]] = [[] for _ in timed]
    for _ in range(repeats):
        for times, (fn, inner, threads) in zip(rounds, timed, strict=True):
            torch.set_num_threads(threads)
            times.append(median_seconds(fn, 1, 0, device, inner))
    torch.set_num_threads(restore)
    return [statistics.median(times) for times in rounds]


def throughput(size: int, channels: int, device: torch.device, repeats: int, warmup: int) -> dict[str, Any]:
    """Images/s of the three two-view pipelines on one batch."""
    x, mean, std, source = images(size, channels)
    mode = "L" if channels == 1 else "RGB"
    pil = [Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy(), mode=mode) for img in x]
    tv = torchvision_pipeline(size, mean, std)
    kn = kornia_pipeline(size, mean, std).to(device)
    preset = augment_preset("simclr")
    views = [BatchAugment(ViewAugment(**preset[v]), size, mean, std) for v in ("view1", "view2")]
    xd, g = x.to(device), torch.Generator().manual_seed(0)

    def torchvision_two_views() -> object:
        return [torch.stack([tv(im) for im in pil]).to(device) for _ in range(2)]

    def kornia_two_views() -> object:
        return [kn(xd.float().div_(255.0)) for _ in range(2)]

    def compmod_two_views() -> object:
        return [view(xd, g) for view in views]

    threads = torch.get_num_threads()
    one_core = device.type == "cpu" and threads > 1  # torchvision per image (PIL) uses one core
    timed = [
        (torchvision_two_views, 1, threads),
        (kornia_two_views, 3, threads),
        (compmod_two_views, 10, threads),
    ]
    t_tv, t_kn, t_cm, *rest = interleaved(
        timed + ([(compmod_two_views, 10, 1)] if one_core else []), repeats, warmup, device
    )
    t_cm1 = rest[0] if one_core else None
    return {
        "case": f"{size}x{size}x{channels}",
        "images": source,
        "torchvision_img_s": BATCH / t_tv,
        "kornia_img_s": BATCH / t_kn,
        "compmod_img_s": BATCH / t_cm,
        "ratio_vs_torchvision": t_tv / t_cm,
        "ratio_vs_kornia": t_kn / t_cm,
        "compmod_1thread_img_s": None if t_cm1 is None else BATCH / t_cm1,
        "ratio_vs_torchvision_1thread": None if t_cm1 is None else t_tv / t_cm1,
    }


def step_share(
    config: str, size: int, channels: int, batch: int, device: torch.device, repeats: int, warmup: int
) -> dict[str, Any]:
    """Median time of the two views and of one plain training step, as `Trainer._epoch` runs them."""
    cfg = load_config(CONFIGS / config, [f"train.batch_size={batch}"])
    x, mean, std, source = images(size, channels, batch)
    torch.manual_seed(0)
    dtype = getattr(torch, cfg.train.dtype)
    step_fn = build_train_step(cfg, channels, size, torch.device(device), 100, with_compmod=False)
    step_fn.method.train()
    train = cfg.train
    views = [v.to(device) for v in build_augmentations(cfg, size, mean, std)]
    xd, g = x.to(device), torch.Generator().manual_seed(1)

    def augment() -> tuple[torch.Tensor, ...]:
        return tuple(step_fn.prepare(view(xd, g).to(dtype)) for view in views)

    x1, x2 = augment()

    def step() -> float:
        total, _ = step_fn.step(x1, x2, train.lr, 0.5)  # includes the method's after-step hook
        return float(total)  # read every step here, so that each timed step has finished

    threads = torch.get_num_threads()
    t_aug, t_step = interleaved([(augment, 5, threads), (step, 1, threads)], repeats, warmup, device)
    return {
        "case": f"{cfg.model.backbone} {size}x{size}x{channels} batch {batch}",
        "config": f"configs/{config}",
        "images": source,
        "augment_s": t_aug,
        "step_s": t_step,
        "share": t_aug / (t_aug + t_step),
    }


def summary(rows: list[dict[str, Any]], shares: list[dict[str, Any]], threads: int) -> str:
    table = markdown_table(
        ["case", "torchvision img/s", "kornia img/s", "compmod img/s", "vs torchvision", "vs kornia"],
        [
            [
                r["case"],
                r["torchvision_img_s"],
                r["kornia_img_s"],
                r["compmod_img_s"],
                f"{r['ratio_vs_torchvision']:.1f}x",
                f"{r['ratio_vs_kornia']:.1f}x",
            ]
            for r in rows
        ],
    )
    lines = [
        f"SimCLR augmentation, batch {BATCH}, two views, {threads} thread(s); images/s of source images, "
        "median after warm-up. torchvision: v2 per PIL image; kornia and compmod: batched.",
        "",
        table,
        "",
    ]
    per_core = [r for r in rows if r["compmod_1thread_img_s"] is not None]
    if per_core:
        lines += [
            "Per core (compmod on 1 thread; torchvision's PIL ops use one core whatever the thread count): "
            + "; ".join(
                f"{r['case']} {r['compmod_1thread_img_s']:,.0f} img/s, "
                f"{r['ratio_vs_torchvision_1thread']:.1f}x torchvision"
                for r in per_core
            )
            + ".",
            "",
        ]
    for s in shares:
        lines.append(
            f"Augmentation share of a SimCLR training step, {s['case']}: {100 * s['share']:.1f} % "
            f"(two views {1e3 * s['augment_s']:.1f} ms, step {1e3 * s['step_s']:.0f} ms)."
        )
    ratios = [r["ratio_vs_torchvision"] for r in rows] + [r["ratio_vs_torchvision_1thread"] for r in per_core]
    share, ratio = shares[0]["share"], min(ratios)
    lines += [
        "",
        f"Acceptance (issue 4): share on the small CNN {100 * share:.1f} % (<= 10 %: "
        f"{'yes' if share <= 0.1 else 'NO'}); smallest ratio vs torchvision {ratio:.1f}x (>= 10x: "
        f"{'yes' if ratio >= 10 else 'NO'}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--quick", action="store_true", help="3 repeats, 1 warm-up: a smoke run")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per figure (default 7; quick 3)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (3 if args.quick else 7)
    warmup = 1 if args.quick else 3
    env = environment(
        device,
        torchvision=torchvision.__version__,
        kornia=kornia.__version__,
        batch=BATCH,
        views=2,
        preset="simclr",
        repeats=repeats,
        warmup=warmup,
    )
    rows = [throughput(size, c, device, repeats, warmup) for size, c in CASES]
    shares = [step_share(*case, device, repeats, warmup) for case in STEP_CASES]
    results = {"throughput": rows, "step_share": shares}
    write_result("augment", env, results, summary(rows, shares, torch.get_num_threads()), args.out)


if __name__ == "__main__":
    main()
