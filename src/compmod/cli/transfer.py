"""`compmod export` and `compmod transfer`: their arguments and commands."""

from __future__ import annotations

import argparse
import json

EXPORT_FORMATS = ("safetensors", "torchvision", "detectron2")  # = export_formats.FORMATS, without torch


def add_transfer_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a checkpoint's backbone as safetensors, torchvision, detectron2")
    p.add_argument("--checkpoint", required=True, help="e.g. RUN_DIR/checkpoints/last.pt")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--format", nargs="+", choices=EXPORT_FORMATS, default=list(EXPORT_FORMATS), dest="formats"
    )

    p = sub.add_parser("transfer", help="fine-tune an exported backbone on a downstream task")
    tasks = p.add_subparsers(dest="task", required=True)
    d = tasks.add_parser("detect", help="COCO detection + instance segmentation with Mask R-CNN (FPN)")
    d.add_argument("--weights", required=True, help="RESNET_torchvision.pth written by `compmod export`")
    d.add_argument("--data", required=True, help="COCO-format root: annotations/instances_{train,val}.json")
    d.add_argument("--out", required=True, help="folder for detect_results.json")
    d.add_argument("--epochs", type=int, default=12, help="12 ~ the 1x schedule on COCO")
    d.add_argument("--batch-size", type=int, default=16)
    d.add_argument("--lr", type=float, default=None, help="default 0.02 x batch size / 16")
    d.add_argument("--min-size", type=int, default=800, help="shorter image side after resizing")
    d.add_argument("--max-size", type=int, default=1333, help="longer image side at most")
    d.add_argument("--arch", choices=["r50", "r18"], default="r50", help="ResNet of the FPN backbone")
    d.add_argument("--trainable-layers", type=int, default=3, help="ResNet stages fine-tuned (0-5)")
    d.add_argument("--device", default="auto")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--workers", type=int, default=0, help="data-loading processes (0: the main one)")


def cmd_export(args: argparse.Namespace) -> int:
    from compmod.transfer.export_formats import export

    paths = export(args.checkpoint, args.out, args.formats)
    print(json.dumps({name: str(path) for name, path in paths.items()}, indent=2))
    return 0


def cmd_transfer(args: argparse.Namespace) -> int:
    from compmod.transfer.detect import transfer_detect

    keys = ("epochs", "batch_size", "lr", "min_size", "max_size", "arch", "trainable_layers", "device")
    options = {k: getattr(args, k) for k in (*keys, "seed", "workers")}
    results = transfer_detect(args.weights, args.data, out_dir=args.out, **options)
    print(json.dumps(results, indent=2))
    return 0
