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
linear-evaluation recipe is the default. Cost: 60k x 512 features, 30 epochs, about 2-3 s on 2 CPU threads
(far more when other processes compete for the cores; then `torch.set_num_threads(1)` is faster).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

    linear = nn.Linear(x_train.shape[1], num_classes, device=device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.SGD(
        [
            {"params": [linear.weight], "weight_decay": weight_decay},
            {"params": [linear.bias], "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=0.9,
    )
    generator = torch.Generator().manual_seed(seed)
    n = x_train.shape[0]
    total_steps = epochs * math.ceil(n / batch_size)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total_steps, lr)
            idx = perm[start : start + batch_size]
            loss = F.cross_entropy(linear(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1

    with torch.no_grad():
        top = linear(x_test).topk(min(5, num_classes), dim=1).indices
        hits = top == y_test[:, None]
        top1 = hits[:, 0].double().mean().item() * 100.0
        top5 = hits.any(dim=1).double().mean().item() * 100.0
    return {"linear_top1": top1, "linear_top5": top5}


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
