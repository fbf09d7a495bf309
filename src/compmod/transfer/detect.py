"""COCO detection and instance segmentation with Mask R-CNN R50-FPN on a compmod backbone (Table 5).

`transfer_detect(weights, data_root, ...)` builds torchvision's Mask R-CNN, loads the exported
torchvision-format backbone (``resnet50_torchvision.pth``, see `compmod.transfer.export_formats`) into
``model.backbone.body`` (every key but ``fc.*`` must match), fine-tunes on a COCO-format dataset
(`compmod.transfer.coco`), and reports box and mask AP, AP50, AP75 (percent) from pycocotools' COCOeval.

The model (`compmod.transfer.mask_rcnn`): torchvision's recipe for a pretrained backbone, with
detectron2's init of the mask logits.

Schedule. Detectron2's 1x schedule (90k iterations of 16 images, about 12 COCO epochs; SGD momentum 0.9,
weight decay 1e-4, lr 0.02; linear warm-up from 0.001x over 1,000 iterations; lr x0.1 at 60k and 80k
iterations), scaled to ``epochs x ceil(n_train / batch_size)`` iterations: the decays at the same
fractions (2/3 and 8/9) of the run, the warm-up over min(1000, iterations of one epoch) as torchvision's
detection reference (``references/detection/engine.py``) shortens it, and lr = 0.02 x batch_size / 16
unless given (linear scaling, Goyal et al. 2017). Training augmentation is the 1x's horizontal flip;
images are resized by Mask R-CNN to ``min_size``/``max_size`` (800/1333 on COCO).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torchvision.models.detection import MaskRCNN

from compmod.engine.checkpoint import atomic_write
from compmod.engine.device import resolve_device
from compmod.errors import ConfigError, DataError, NonFiniteLossError
from compmod.transfer.coco import CocoInstances, coco_ap, hflip, load_coco, to_coco_results
from compmod.transfer.mask_rcnn import build_mask_rcnn, load_detection_backbone, read_backbone_weights

RESULTS_FILE = "detect_results.json"
METRICS = ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75")
_BASE_ITERS, _BASE_WARMUP, _BASE_STEPS = 90_000, 1_000, (60_000, 80_000)  # detectron2's 1x


def lr_factor(step: int, total: int, warmup: int, warmup_factor: float = 0.001) -> float:
    """Multiplier of the base lr at optimizer step `step` of `total`: linear warm-up from `warmup_factor`
    over `warmup` steps, then x0.1 at 2/3 and 8/9 of `total` (the 1x schedule's fractions)."""
    decays = sum(step >= round(total * s / _BASE_ITERS) for s in _BASE_STEPS)
    warm = 1.0 if step >= warmup else warmup_factor + (1 - warmup_factor) * step / warmup
    return warm * 0.1**decays


def _batches(
    dataset: CocoInstances, batch_size: int, gen: torch.Generator, train: bool, workers: int = 0
) -> Iterator[list[tuple[torch.Tensor, dict[str, torch.Tensor]]]]:
    """Lists of (image, target), read by `workers` processes (0: this one); `train`: a shuffle and
    horizontal flips with probability 1/2, both drawn from `gen`."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        generator=gen if train else None,
        num_workers=workers,
        collate_fn=list,
    )
    for items in loader:
        if train:
            flips = torch.rand(len(items), generator=gen) < 0.5
            items = [hflip(*item) if f else item for item, f in zip(items, flips.tolist(), strict=True)]
        yield items


def _to(target: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in target.items()}


def train_detector(
    model: MaskRCNN,
    data: CocoInstances,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    gen: torch.Generator,
    workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune `model` in place with the scaled 1x schedule.

    Returns:
        iterations, epoch_losses (mean total loss of each epoch), train_time_s.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    per_epoch = math.ceil(len(data) / batch_size)
    total, warmup = epochs * per_epoch, min(_BASE_WARMUP, per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, warmup))
    model.train()
    t0, step, epoch_losses = time.perf_counter(), 0, []
    for epoch in range(epochs):
        loss_sum = 0.0
        for items in _batches(data, batch_size, gen, train=True, workers=workers):
            images = [img.to(device) for img, _ in items]
            losses = model(images, [_to(t, device) for _, t in items])
            loss = sum(losses.values())
            loss_value = loss.detach().item()
            if not math.isfinite(loss_value):
                parts = ", ".join(f"{k} {v.detach().item():.4g}" for k, v in losses.items())
                raise NonFiniteLossError(
                    f"detection loss is {loss_value} at iteration {step} ({parts}); lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step, loss_sum = step + 1, loss_sum + loss_value
        epoch_losses.append(loss_sum / per_epoch)
        if progress:
            lr_now = sched.get_last_lr()[0]
            line = f"detect epoch {epoch + 1}/{epochs}  loss {epoch_losses[-1]:.4f}  lr {lr_now:.2e}"
            print(line, file=sys.stderr, flush=True)
    return {"iterations": step, "epoch_losses": epoch_losses, "train_time_s": time.perf_counter() - t0}


@torch.no_grad()
def evaluate_detector(
    model: MaskRCNN, data: CocoInstances, batch_size: int, device: torch.device, workers: int = 0
) -> dict[str, Any]:
    """Box and mask AP, AP50, AP75 (percent) of `model` on `data` (COCOeval)."""
    model.eval()
    results: list[dict[str, Any]] = []
    for items in _batches(data, batch_size, torch.Generator(), train=False, workers=workers):
        outputs = model([img.to(device) for img, _ in items])
        for (_, target), out in zip(items, outputs, strict=True):
            results += to_coco_results(out, int(target["image_id"]), data.cat_ids)
    box, segm = coco_ap(data.coco, results, "bbox"), coco_ap(data.coco, results, "segm")
    return {
        **{f"box_{k}": v for k, v in box.items()},
        **{f"mask_{k}": v for k, v in segm.items()},
        "detections": len(results),
    }


def _coco_splits(data_root: str | Path) -> tuple[CocoInstances, CocoInstances]:
    """The COCO-format folder's train and val splits; their categories must agree."""
    train_coco, train_dir = load_coco(data_root, "train")
    val_coco, val_dir = load_coco(data_root, "val")
    train, val = CocoInstances(train_coco, train_dir), CocoInstances(val_coco, val_dir)
    if train.cat_ids != val.cat_ids:
        raise DataError(f"train and val categories differ: {train.cat_ids} vs {val.cat_ids}")
    return train, val


def transfer_detect(
    backbone_weights: str | Path | Mapping[str, torch.Tensor],
    data_root: str | Path,
    *,
    epochs: int = 12,
    batch_size: int = 16,
    lr: float | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    arch: str = "r50",
    trainable_layers: int = 3,
    device: str = "auto",
    seed: int = 0,
    workers: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune Mask R-CNN (ResNet-FPN) from `backbone_weights` on ``data_root``'s COCO ``train`` split
    and evaluate on ``val``.

    Args:
        backbone_weights: torchvision-format ResNet weights (``<arch>_torchvision.pth`` of `compmod export`,
            a ``backbone.safetensors`` of an ImageNet-stem RGB ResNet, or the state dict itself).
        data_root: COCO-format folder (`compmod.transfer.coco`).
        epochs, batch_size, lr: the schedule (module docstring); lr None -> 0.02 x batch_size / 16.
        min_size, max_size: Mask R-CNN's resize of the shorter / longer image side.
        arch: "r50" (Table 5) or "r18"; must match the weights.
        trainable_layers: ResNet stages fine-tuned, counted from res5 (0..5; 3 leaves stem and res2 frozen).
        device: "auto", "cpu", "cuda", "cuda:1"...
        workers: processes that read and decode images and masks (0: the main process).
        out_dir: where ``detect_results.json`` is written (atomically); None writes nothing.

    Returns:
        box_AP, box_AP50, box_AP75, mask_AP, mask_AP50, mask_AP75 in percent, and the settings, the number
        of iterations and detections, the mean training loss of each epoch and the times.
    """
    if epochs < 1 or batch_size < 1:
        raise ConfigError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    dev = resolve_device(device)
    train, val = _coco_splits(data_root)
    lr = 0.02 * batch_size / 16 if lr is None else lr
    torch.manual_seed(seed)
    model = build_mask_rcnn(len(train.cat_ids) + 1, arch, trainable_layers, min_size, max_size)
    load_detection_backbone(model, read_backbone_weights(backbone_weights), arch)
    model.to(dev)
    gen = torch.Generator().manual_seed(seed)
    fit = train_detector(
        model, train, epochs=epochs, batch_size=batch_size, lr=lr, device=dev, gen=gen, workers=workers,
        progress=progress,
    )  # fmt: skip
    t0 = time.perf_counter()
    metrics = evaluate_detector(model, val, batch_size, dev, workers)
    settings = {
        "arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr, "min_size": min_size,
        "max_size": max_size, "trainable_layers": trainable_layers, "seed": seed,
    }  # fmt: skip
    results = {
        **{k: metrics[k] for k in METRICS},
        **settings,
        "train_images": len(train),
        "val_images": len(val),
        "detections": metrics["detections"],
        **fit,
        "eval_time_s": time.perf_counter() - t0,
    }
    if out_dir is not None:
        text = json.dumps(results, indent=2) + "\n"
        atomic_write(Path(out_dir) / RESULTS_FILE, lambda f: f.write(text.encode()))
    return results
