"""Linear probe on frozen features: separable data, chance on random labels, determinism, inputs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from compmod.eval.linear import _sgd, cosine_lr, linear_probe

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def blobs(n: int, num_classes: int = 10, dim: int = 32, seed: int = 0, spread: float = 4.0):
    """Gaussian blobs with unit noise around random centres; the same centres for every seed."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * spread
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return centres[labels] + torch.randn(n, dim, generator=g), labels


def test_linear_probe_separable_blobs_reach_99():
    x_train, y_train = blobs(2000, seed=0)
    x_test, y_test = blobs(1000, seed=1)
    out = linear_probe(x_train, y_train, x_test, y_test, num_classes=10, epochs=10)
    assert set(out) == {"linear_top1", "linear_top5"}
    assert out["linear_top1"] >= 99.0
    assert out["linear_top5"] >= out["linear_top1"]


def reference_sgd(x, y, num_classes, epochs, lr, batch_size, weight_decay, seed):
    """The probe's training as the textbook loop: `nn.Linear` from zeros, autograd through
    `F.cross_entropy`, `torch.optim.SGD` (momentum 0.9, weight decay on the weight only), cosine lr per step,
    shuffles drawn as the probe draws them."""
    linear = torch.nn.Linear(x.shape[1], num_classes, dtype=x.dtype)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    groups = [{"params": [linear.weight], "weight_decay": weight_decay}, {"params": [linear.bias]}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    total, step = epochs * -(-x.shape[0] // batch_size), 0
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], batch_size):
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(step, total, lr)
            idx = perm[start : start + batch_size]
            optimizer.zero_grad()
            F.cross_entropy(linear(x[idx]), y[idx]).backward()
            optimizer.step()
            step += 1
    return linear.weight.detach(), linear.bias.detach()


def test_probe_training_is_torch_sgd_on_the_cross_entropy():
    # float64 on both sides: the written-out gradient and autograd's differ by rounding only (~1e-16
    # relative per step, ~1e-13 after 60 steps), while a wrong momentum, decay, lr or gradient moves the
    # weights by > 1e-3. 1000 samples in batches of 64: the last batch of each epoch has 40.
    x, y = blobs(1000, spread=0.5, seed=3)
    x = x.double()
    args = (x, y, 10, 4, 0.1, 64, 1e-3, 5)
    weight, bias = _sgd(*args)
    ref_weight, ref_bias = reference_sgd(*args)
    assert weight.abs().max() > 0.1  # it trained
    torch.testing.assert_close(weight, ref_weight, rtol=0, atol=1e-10)
    torch.testing.assert_close(bias, ref_bias, rtol=0, atol=1e-10)


def test_linear_probe_random_labels_stay_near_chance():
    g = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(2000, 32, generator=g), torch.randn(2000, 32, generator=g)
    y_train, y_test = torch.randint(0, 10, (2000,), generator=g), torch.randint(0, 10, (2000,), generator=g)
    out = linear_probe(x_train, y_train, x_test, y_test, num_classes=10, epochs=10)
    # Chance is 10 % top-1 and 50 % top-5; one standard error on 2000 samples is ~0.7 and ~1.1 points.
    assert 6.0 < out["linear_top1"] < 14.0
    assert 44.0 < out["linear_top5"] < 56.0


def test_linear_probe_is_deterministic_given_the_seed():
    x_train, y_train = blobs(600, spread=0.5, seed=0)  # overlapping blobs: results depend on the shuffle
    x_test, y_test = blobs(600, spread=0.5, seed=1)
    args = (x_train, y_train, x_test, y_test, 10)
    first = linear_probe(*args, epochs=3, batch_size=64, seed=7)
    assert linear_probe(*args, epochs=3, batch_size=64, seed=7) == first
    others = [linear_probe(*args, epochs=3, batch_size=64, seed=s) for s in (8, 9, 10)]
    assert any(o != first for o in others), "the seed does not reach the shuffling"


def test_linear_probe_standardises_with_train_statistics():
    x_train, y_train = blobs(1000, spread=0.7, seed=0)
    x_test, y_test = blobs(1000, spread=0.7, seed=1)
    scale, shift = torch.logspace(-3, 3, 32), torch.linspace(-100, 100, 32)
    plain = linear_probe(x_train, y_train, x_test, y_test, 10, epochs=5)
    affine = linear_probe(x_train * scale + shift, y_train, x_test * scale + shift, y_test, 10, epochs=5)
    # Per-dimension affine maps cancel out up to rounding: at most a couple of test points may flip.
    assert abs(plain["linear_top1"] - affine["linear_top1"]) <= 0.3
    # A constant train dimension keeps std 1 instead of dividing by zero.
    const = torch.cat([x_train, torch.ones(1000, 1)], dim=1), torch.cat([x_test, torch.zeros(1000, 1)], dim=1)
    out = linear_probe(const[0], y_train, const[1], y_test, 10, epochs=5)
    assert abs(out["linear_top1"] - plain["linear_top1"]) <= 0.3


def test_linear_probe_top5_is_top_min_5_classes():
    x_train, y_train = blobs(300, num_classes=3, spread=0.2, seed=0)
    x_test, y_test = blobs(300, num_classes=3, spread=0.2, seed=1)
    out = linear_probe(x_train, y_train, x_test, y_test, num_classes=3, epochs=2)
    assert out["linear_top5"] == 100.0  # top-3 of 3 classes always hits
    assert out["linear_top1"] < 100.0


def test_cosine_lr_decays_from_peak_to_zero():
    assert cosine_lr(0, 100, 0.1) == 0.1
    assert cosine_lr(50, 100, 0.1) == pytest.approx(0.05)
    assert cosine_lr(100, 100, 0.1) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_labels": torch.zeros(99, dtype=torch.long)}, r"train_labels must have shape \(100,\)"),
        ({"test_labels": torch.zeros(49, dtype=torch.long)}, r"test_labels must have shape \(50,\)"),
        ({"test_feats": torch.randn(50, 7)}, "feature dims differ"),
        ({"train_feats": torch.randn(0, 8), "train_labels": torch.zeros(0, dtype=torch.long)}, "non-empty"),
        ({"train_labels": torch.full((100,), 3)}, r"must lie in \[0, 3\)"),
        ({"train_labels": torch.zeros(100)}, "must be integers"),
        ({"num_classes": 1, "train_labels": torch.zeros(100, dtype=torch.long)}, "num_classes must be >= 2"),
        ({"epochs": 0}, "epochs and batch_size must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
    ],
)
def test_linear_probe_rejects_bad_inputs(kwargs, match):
    args = {
        "train_feats": torch.randn(100, 8),
        "train_labels": torch.randint(0, 3, (100,)),
        "test_feats": torch.randn(50, 8),
        "test_labels": torch.randint(0, 3, (50,)),
        "num_classes": 3,
    }
    with pytest.raises(ValueError, match=match):
        linear_probe(**(args | kwargs))


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST files not installed")
def test_linear_probe_fashion_mnist_raw_pixels():
    def read(name: str, offset: int, count: int, item: int) -> torch.Tensor:
        with gzip.open(FASHION_MNIST / name) as f:
            data = f.read(offset + count * item)
        return torch.from_numpy(np.frombuffer(data, np.uint8, offset=offset).copy())

    x_train = read("train-images-idx3-ubyte.gz", 16, 10_000, 784).reshape(-1, 784).float() / 255
    x_test = read("t10k-images-idx3-ubyte.gz", 16, 2_000, 784).reshape(-1, 784).float() / 255
    y_train = read("train-labels-idx1-ubyte.gz", 8, 10_000, 1).long()
    y_test = read("t10k-labels-idx1-ubyte.gz", 8, 2_000, 1).long()
    out = linear_probe(x_train, y_train, x_test, y_test, num_classes=10, epochs=5)
    print(f"Fashion-MNIST raw-pixel linear probe, 10k train / 2k test: {out}")
    # Logistic regression on raw pixels: ~84 % with the full train set, a little less with 10k.
    assert 78.0 < out["linear_top1"] < 90.0
    assert out["linear_top5"] > 97.0
