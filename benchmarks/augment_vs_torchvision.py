"""Images/s of `BatchAugment` (simclr preset, two views) vs torchvision v2 applied per image from PIL.

    python -m benchmarks.augment_vs_torchvision [--threads 1] [--repeats 7] [--device cpu]

Both sides turn a batch of 256 decoded images into two normalised float views. torchvision runs the
SimCLR pipeline (RandomResizedCrop, RandomHorizontalFlip, RandomApply(ColorJitter, 0.8), RandomGrayscale,
ToImage, ToDtype, Normalize) on each PIL image and stacks the results; `BatchAugment` takes the same
images as one uint8 (N, C, H, W) tensor. Numbers are images/s (each image yields two views), the median
of `--repeats` timed runs after warm-up. kornia is not installed in this environment, so it is skipped.
Writes benchmarks/results/augment.json.

On CPU much of BatchAugment's time is page faults of its large temporaries when glibc trims its heap
between calls; `MALLOC_TRIM_THRESHOLD_=4000000000 MALLOC_MMAP_THRESHOLD_=4000000000` in the environment
(or mallopt at start-up) removes them and speeds it up ~1.3-1.5x; the JSON records any MALLOC_ variables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

from compmod.config.augment import ViewAugment
from compmod.data.augment import BatchAugment
from compmod.data.presets import augment_preset

BATCH = 256
CASES = [(28, 1), (32, 3)]  # Fashion-MNIST-like, CIFAR-like
RESULTS = Path(__file__).resolve().parent / "results" / "augment.json"


def torchvision_pipeline(size: int, mean: list[float], std: list[float]) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def median_seconds(
    fn: Callable[[], object], repeats: int, warmup: int, sync: Callable[[], None], inner: int = 1
) -> float:
    """Median over `repeats` timed runs of the mean time of `inner` back-to-back calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def run_case(size: int, channels: int, device: torch.device, repeats: int) -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (BATCH, channels, size, size), dtype=torch.uint8, generator=g)
    mode = "L" if channels == 1 else "RGB"
    pil = [Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy(), mode=mode) for img in x]
    mean, std = [0.5] * channels, [0.25] * channels

    tv = torchvision_pipeline(size, mean, std)

    def torchvision_two_views() -> object:
        return torch.stack([tv(im) for im in pil]), torch.stack([tv(im) for im in pil])

    preset = augment_preset("simclr")
    view1 = BatchAugment(ViewAugment(**preset["view1"]), size, mean, std)
    view2 = BatchAugment(ViewAugment(**preset["view2"]), size, mean, std)
    xd = x.to(device)

    def batched_two_views() -> object:
        return view1(xd, g), view2(xd, g)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t_tv = median_seconds(torchvision_two_views, max(3, repeats // 2), 1, lambda: None)
    t_batch = median_seconds(batched_two_views, repeats, 3, sync, inner=10)
    return {
        "case": f"{size}x{size}x{channels}",
        "torchvision_per_image_img_s": BATCH / t_tv,
        "batch_augment_img_s": BATCH / t_batch,
        "ratio": t_tv / t_batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: per core)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [run_case(size, c, device, args.repeats) for size, c in CASES]

    print(f"batch {BATCH}, 2 views, {args.threads} thread(s), BatchAugment on {device}; median of runs")
    print(f"{'case':>10} | {'torchvision/PIL img/s':>21} | {'BatchAugment img/s':>18} | {'ratio':>6}")
    for r in rows:
        print(
            f"{r['case']:>10} | {r['torchvision_per_image_img_s']:>21,.0f} | "
            f"{r['batch_augment_img_s']:>18,.0f} | {r['ratio']:>5.1f}x"
        )
    print("kornia: not installed here, skipped")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "machine": platform.processor() or platform.machine(),
        "device": str(device),
        "threads": args.threads,
        "batch": BATCH,
        "views": 2,
        "preset": "simclr",
        "repeats": args.repeats,
        "kornia": "not installed; skipped",
        "load_average_1min": os.getloadavg()[0],  # the machine is shared: read numbers with this
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
    }
    RESULTS.write_text(json.dumps({**meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
