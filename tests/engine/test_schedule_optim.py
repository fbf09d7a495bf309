"""Learning-rate schedule and optimisers, checked against hand-written formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compmod.config.schema import TrainConfig
from compmod.engine.optim import LARS, build_optimizer, param_groups
from compmod.engine.schedule import warmup_cosine


def test_warmup_cosine_values():
    base, total, warm = 0.4, 100, 10
    assert warmup_cosine(0, total, warm, base) == pytest.approx(base / warm)
    assert warmup_cosine(9, total, warm, base) == pytest.approx(base)
    assert warmup_cosine(10, total, warm, base) == pytest.approx(base)
    mid = 10 + 45
    assert warmup_cosine(mid, total, warm, base) == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(100, total, warm, base, min_lr=0.01) == pytest.approx(0.01)
    lrs = [warmup_cosine(s, total, warm, base) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # monotone decay after warm-up


def test_warmup_cosine_without_warmup_starts_at_base():
    assert warmup_cosine(0, 50, 0, 1.0) == pytest.approx(1.0)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def test_param_groups_exclude_bias_and_norm_from_decay():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2, bias=False))
    decay, no_decay = param_groups([net], 0.5)
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(net[0].bias), id(net[1].weight), id(net[1].bias)}


def test_param_groups_skip_frozen_and_shared_parameters():
    lin = nn.Linear(2, 2)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    groups = param_groups([lin, lin, frozen], 0.1)
    assert sum(len(g["params"]) for g in groups) == 2


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_build_optimizer_each_kind_steps(name):
    net = nn.Linear(3, 2)
    opt = build_optimizer([net], TrainConfig(optimizer=name, lr=0.1))
    before = net.weight.detach().clone()
    net(torch.randn(4, 3)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, net.weight)


def test_lars_matches_reference_update():
    """One LARS step against the update rule of FAIR barlowtwins' LARS, written out by hand."""
    torch.manual_seed(0)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    lr, mom, wd, eta = 0.2, 0.9, 1e-2, 1e-3
    opt = LARS(
        [
            {"params": [w], "weight_decay": wd, "lars_exclude": False},
            {"params": [b], "weight_decay": 0.0, "lars_exclude": True},
        ],
        lr=lr,
        momentum=mom,
        eta=eta,
    )
    expected_w, expected_b = w.detach().clone(), b.detach().clone()
    mu_w, mu_b = torch.zeros_like(w), torch.zeros_like(b)
    for _ in range(3):
        opt.zero_grad()
        (w.sum(1) * b).pow(2).sum().backward()
        gw, gb = w.grad.clone(), b.grad.clone()
        # reference: dp = g + wd*p; q = eta*|p|/|dp|; mu = mom*mu + q*dp; p -= lr*mu
        dp = gw + wd * expected_w
        q = eta * expected_w.norm() / dp.norm()
        mu_w = mom * mu_w + q * dp
        mu_b = mom * mu_b + gb
        expected_w, expected_b = expected_w - lr * mu_w, expected_b - lr * mu_b
        opt.step()
        torch.testing.assert_close(w.detach(), expected_w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.detach(), expected_b, rtol=1e-12, atol=1e-12)
        with torch.no_grad():  # keep the reference on the same trajectory
            expected_w.copy_(w)
            expected_b.copy_(b)
