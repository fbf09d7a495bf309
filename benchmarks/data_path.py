"""The data path of an ImageNet-style run at 224 px: the prepared store's size and read speed (raw, against
the JPEG it could have held), and images/s of the feed alone and under a step it must keep up with.

    python -m benchmarks.data_path [--images 512] [--batch 256] [--repeats 5] [--quick] [--out DIR]

Data: a generated ImageNet-style folder (`synthetic.write_imagenet`), `--images` JPEGs (quality 90) of
ImageNet-like sizes (each side 250-500 px, mean ~375 px), decoded by `compmod prepare-data`'s code with 2
processes at image_size 224 (stored shorter side 256). The workload is SimCLR's ImageNet views (crop scale
0.08-1, aspect 3/4-4/3, flip, jitter, greyscale, blur) at the real batch of 256, both views.

Figures (each the median of `--repeats` timed epochs after one warm-up epoch, one process, one thread
for the reading thread and `torch.get_num_threads()` for the rest):
- store: bytes per image raw (what the store holds) and as JPEG quality 90 at the same size
  (`torchvision.io.encode_jpeg`), and images/s of reading one raw image (a copy out of the memory map)
  against decoding its JPEG (`decode_jpeg`), on one thread;
- gather: images/s of the reading thread's work alone (`StoreFeed._gather`: draw both views' parameters,
  copy each sample's two crop footprints into canvases), i.e. what the store delivers to the device;
- feed: images/s of `StoreFeed.epoch` on the CPU, the gather thread plus both views' augmentation on the
  training thread (on a GPU the augmentation runs there);
- overlap: the same epoch with a stand-in step after each batch (a float32 matmul loop that takes as
  long as one batch's gather), and the share of the epoch the training thread spent waiting for the
  reading thread (`waited_s`): near zero means reading overlaps the step and never holds it up.
Writes `<out>/data_path.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import RESULTS, environment
from compmod.config.augment import ViewAugment
from compmod.data.augment import BatchAugment
from compmod.data.datasets import load_dataset
from compmod.data.datasets.synthetic import write_imagenet
from compmod.engine.feed import StoreFeed

SIMCLR = ViewAugment(blur_prob=0.5)  # crop 0.08-1, 3/4-4/3, flip 0.5, jitter 0.8, greyscale 0.2
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _median_epoch(run, repeats: int) -> float:
    run()  # warm-up: page cache, allocator, kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _store_figures(variable, n: int) -> dict[str, float]:
    from torchvision.io import decode_jpeg, encode_jpeg

    raw_bytes = jpeg_bytes = 0
    read_s = decode_s = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        img = torch.from_numpy(variable.image(i).copy())
        read_s += time.perf_counter() - t0
        data = encode_jpeg(img, quality=90)
        t0 = time.perf_counter()
        decode_jpeg(data)
        decode_s += time.perf_counter() - t0
        raw_bytes += img.numel()
        jpeg_bytes += data.numel()
    return {
        "raw_kib_per_image": raw_bytes / n / 1024,
        "jpeg_q90_kib_per_image": jpeg_bytes / n / 1024,
        "raw_read_images_per_s": n / read_s,
        "jpeg_decode_images_per_s": n / decode_s,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.batch, args.repeats = 64, 32, 1
    torch.set_num_threads(1)  # on this 2-core machine: one core trains, the other reads
    with tempfile.TemporaryDirectory() as tmp:
        classes = 8
        root = write_imagenet(Path(tmp) / "in", classes, args.images // classes, 1, (250, 500), corrupt=0)
        t0 = time.perf_counter()
        ds = load_dataset("imagenet", "pretrain", root=str(root), image_size=224, store_dir=tmp, workers=2)
        prepare_s = time.perf_counter() - t0
        variable = ds.variable
        assert variable is not None
        figures: dict[str, float] = {"prepare_images_per_s": len(ds) / prepare_s}
        figures.update(_store_figures(variable, len(variable)))
        views = [BatchAugment(SIMCLR, 224, MEAN, STD) for _ in range(2)]
        feed = StoreFeed(variable, views, slice(0, args.batch), torch.device(args.device), seed=0)
        order = torch.arange(len(variable))
        batches = range(len(variable) // args.batch)
        n = len(batches) * args.batch

        def gather() -> None:
            for i in batches:
                feed._gather(i % 4, order[i * args.batch : (i + 1) * args.batch], 0, i)

        def epoch(step_s: float = 0.0) -> None:
            a = torch.randn(256, 256)
            for _ in feed.epoch(order, 0, batches, args.batch):
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < step_s:  # a stand-in step: float32 matmuls
                    a = torch.tanh(a @ a)

        gather_s = _median_epoch(gather, args.repeats)
        figures["gather_images_per_s"] = n / gather_s
        figures["feed_images_per_s"] = n / _median_epoch(epoch, args.repeats)
        step_s = gather_s / len(batches)
        figures["overlap_step_s"] = step_s
        overlap = _median_epoch(lambda: epoch(step_s), args.repeats)
        figures["overlap_waited_fraction"] = feed.waited_s / overlap
    env = environment(args.device, images=len(ds), batch=args.batch, image_size=224, store_side=256)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "data_path.json").write_text(json.dumps({"env": env, "figures": figures}, indent=2) + "\n")
    lines = [
        "# Data path at 224 px (prepared store, SimCLR's two views)",
        "",
        f"{len(ds)} generated ImageNet-sized JPEGs, batch {args.batch}, {env['machine']}, "
        f"torch {env['torch']}.",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {k} | {v:,.3f} |" for k, v in figures.items()),
    ]
    (out / "data_path.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
