"""Linear probe on precomputed frozen features.

Protocol: standardise every feature dimension with the *training* set's mean and standard deviation
(dimensions constant on the training set keep std 1, as scikit-learn's StandardScaler does), then train one
`nn.Linear` with cross-entropy on shuffled mini-batches, SGD with momentum 0.9 and a cosine learning-rate
decay to zero over all steps (no warm-up). Weight decay, when set, applies to the weight, not the bias.
The layer starts at zero (the problem is convex, so this loses nothing and leaves the shuffling, drawn from
a `torch.Generator` seeded with `seed`, as the only randomness).

Why SGD and not Adam: measured on Fashion-MNIST (60k train / 10k test, 30 epochs, batch 512), SGD lr 0.1
reached 84.3 % test on raw pixels and 85.4 % on 512 random ReLU features; Adam lr 1e-3 / 1e-2 reached
84.5 / 84.2 % and 85.0 / 85.3 %. Equal within noise, so the cheaper optimizer with the classic
linear-evaluation recipe is the default. Cost: 60k x 512 features, 30 epochs, about 1.7 s on 2 CPU threads
(`_sgd` writes the step out instead of going through autograd and `torch.optim`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from compmod.eval.features import check_feature_pair


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    epochs: int = 30,
    lr: float = 0.1,
    batch_size: int = 512,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Train a linear classifier on frozen features and report its test accuracy.

    Args:
        train_feats: (N, d) float features of the training set.
        train_labels: (N,) integer labels in [0, num_classes).
        test_feats: (M, d) float features of the test set.
        test_labels: (M,) integer labels in [0, num_classes).
        num_classes: number of classes C (>= 2).
        epochs: passes over the training set.
        lr: peak learning rate of SGD (momentum 0.9), decayed to 0 by a cosine over all steps.
        batch_size: samples per SGD step.
        weight_decay: L2 penalty on the weight matrix (not the bias).
        seed: seeds the shuffling; the same seed gives the same result on the same device.
        device: where training runs; features are copied there as float32.

    Returns:
        {"linear_top1": ..., "linear_top5": ...} test accuracies in percent; "top5" is top-min(5, C).
    """
    _check_inputs(train_feats, train_labels, test_feats, test_labels, num_classes, epochs, lr, batch_size)
    device = torch.device(device)
    x_train, x_test = _standardise(train_feats.to(device), test_feats.to(device))
    y_train = train_labels.to(device=device, dtype=torch.long)
    y_test = test_labels.to(device=device, dtype=torch.long)

    weight, bias = _sgd(x_train, y_train, num_classes, epochs, lr, batch_size, weight_decay, seed)
    top = torch.addmm(bias, x_test, weight.T).topk(min(5, num_classes), dim=1).indices
    hits = top == y_test[:, None]
    top1 = hits[:, 0].double().mean().item() * 100.0
    top5 = hits.any(dim=1).double().mean().item() * 100.0
    return {"linear_top1": top1, "linear_top5": top5}


@torch.no_grad()
def _sgd(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """The probe's training: mini-batch SGD on the mean cross-entropy, momentum 0.9, cosine lr. Returns the
    weight (C, d) and bias (C,).

    The step is `torch.optim.SGD`'s (grad += wd * w on the weight; buf = 0.9 buf + grad; w -= lr buf) with the
    cross-entropy gradient written out, (softmax(logits) - onehot(y)) / B: without autograd, the optimiser
    and `aten::index` each of the 3,540 steps of the default protocol cost ~1 ms on 2 CPU cores, now ~0.5 ms
    (60k x 512 features, 30 epochs: 3.7 s -> 1.7 s, same accuracies).
    """
    n, d = x.shape
    weight = x.new_zeros(num_classes, d)
    bias = x.new_zeros(num_classes)
    buf_w, buf_b = torch.zeros_like(weight), torch.zeros_like(bias)
    generator = torch.Generator().manual_seed(seed)
    total_steps = epochs * math.ceil(n / batch_size)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            grad = torch.softmax(torch.addmm(bias, xb, weight.T), dim=1)
            grad[torch.arange(yb.shape[0], device=x.device), yb] -= 1.0
            grad /= yb.shape[0]
            grad_w = grad.T.mm(xb)
            if weight_decay:
                grad_w.add_(weight, alpha=weight_decay)
            buf_w.mul_(0.9).add_(grad_w)
            buf_b.mul_(0.9).add_(grad.sum(dim=0))
            rate = cosine_lr(step, total_steps, lr)
            weight.add_(buf_w, alpha=-rate)
            bias.add_(buf_b, alpha=-rate)
            step += 1
    return weight, bias


def cosine_lr(step: int, total_steps: int, peak: float) -> float:
    """Cosine decay from `peak` at step 0 towards 0 at `total_steps`."""
    return peak * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))


def _standardise(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """Centre and scale both sets with the training set's per-dimension mean and std (float32 out).

    The sums run in float64 (without a float64 copy of the data), so a dimension that is constant on the
    training set gets a std of exactly 0, which is replaced by 1.
    """
    train, test = train.float(), test.float()
    mean = (train.sum(dim=0, dtype=torch.float64) / train.shape[0]).float()
    centred = train - mean
    var = centred.square().sum(dim=0, dtype=torch.float64) / max(train.shape[0] - 1, 1)
    std = var.sqrt().float()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return centred.div_(std), (test - mean).div_(std)


def _check_inputs(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    epochs: int,
    lr: float,
    batch_size: int,
) -> None:
    """Raise ValueError with a readable message on malformed inputs."""
    check_feature_pair(train_feats, test_feats, "linear_probe")
    n, m = train_feats.shape[0], test_feats.shape[0]
    if not train_feats.is_floating_point() or not test_feats.is_floating_point():
        raise ValueError(f"features must be floating point; got {train_feats.dtype}, {test_feats.dtype}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; got {num_classes}")
    for name, labels, count in (("train_labels", train_labels, n), ("test_labels", test_labels, m)):
        if labels.ndim != 1 or labels.shape[0] != count:
            raise ValueError(f"{name} must have shape ({count},); got {tuple(labels.shape)}")
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"{name} must be integers; got {labels.dtype}")
        lo, hi = int(labels.min().item()), int(labels.max().item())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{name} must lie in [0, {num_classes}); found range [{lo}, {hi}]")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got epochs={epochs}, batch_size={batch_size}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0; got {lr}")
