"""LARS in both forms against independent transcriptions of the published update rules (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from compmod.config.schema import LarsConfig, TrainConfig
from compmod.engine.optim import LARS, build_optimizer


def fair_reference(w, g, wd, eta, excluded):
    """FAIR barlowtwins/vicreg main.py `LARS.step`: dp = g + wd p; q = eta |p| / |dp| if both > 0."""
    if excluded:
        return g
    dp = g + wd * w
    pn, dn = math.sqrt(float((w * w).sum())), math.sqrt(float((dp * dp).sum()))
    return dp * (eta * pn / dn if pn > 0 and dn > 0 else 1.0)


def solo_reference(w, g, wd, eta, lr, clip, eps, excluded):
    """solo-learn solo/utils/lars.py `LARS.step` (from Lightning Bolts), per parameter."""
    pn, gn = math.sqrt(float((w * w).sum())), math.sqrt(float((g * g).sum()))
    if excluded or pn == 0 or gn == 0:
        return g
    lars_lr = eta * pn / (gn + pn * wd + eps)
    if clip:
        lars_lr = min(lars_lr / lr, 1.0)
    return (g + wd * w) * lars_lr


def run(rule, clip, exclude_bias, steps=6):
    """LARS and the reference side by side on a small float64 problem with a changing lr."""
    torch.manual_seed(0)
    w = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    z = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)  # |w| = 0: never adapted
    wd, eta, mom, eps = 5e-2, 0.02 if rule == "solo" else 1e-3, 0.9, 1e-8
    groups = [
        {"params": [w, z], "weight_decay": wd, "lars_exclude": False},
        {"params": [b], "weight_decay": 0.0, "lars_exclude": exclude_bias},
    ]
    opt = LARS(groups, lr=1.0, momentum=mom, eta=eta, rule=rule, clip_lr=clip, eps=eps)
    ref = {"w": w.detach().clone(), "b": b.detach().clone(), "z": z.detach().clone()}
    buf = {k: None for k in ref}
    lrs = [0.05, 0.5, 4.0, 0.001, 2.0, 0.3][:steps]
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        ((w.sum(1) * b).pow(2).sum() + (z + 1).pow(2).sum()).backward()
        grads = {"w": w.grad.clone(), "b": b.grad.clone(), "z": z.grad.clone()}
        for k, decay, excluded in (("w", wd, False), ("z", wd, False), ("b", 0.0, exclude_bias)):
            if rule == "fair":
                d = fair_reference(ref[k], grads[k], decay, eta, excluded)
            else:
                d = solo_reference(ref[k], grads[k], decay, eta, lr, clip, eps, excluded)
            buf[k] = d.clone() if buf[k] is None else mom * buf[k] + d  # first step: buf = d (both codes)
            ref[k] = ref[k] - lr * buf[k]
        opt.step()
        for k, p in (("w", w), ("b", b), ("z", z)):
            torch.testing.assert_close(p.detach(), ref[k], rtol=1e-12, atol=1e-12)
    return ref


@pytest.mark.parametrize(
    ("rule", "clip", "exclude_bias"),
    [
        ("fair", False, True),
        ("fair", False, False),
        ("solo", True, True),
        ("solo", False, True),
        ("solo", True, False),
    ],
)
def test_lars_follows_the_published_rule(rule, clip, exclude_bias):
    run(rule, clip, exclude_bias)


def test_solo_clipping_changes_the_steps():
    # the lrs of `run` go from 0.001 to 4.0 around the trust step eta |w| / (...): clipping caps some steps
    assert not torch.allclose(run("solo", True, True)["w"], run("solo", False, True)["w"])


def test_the_config_builds_each_rule_and_rejects_clipping_without_solo():
    net = torch.nn.Linear(3, 2)
    cfg = TrainConfig(optimizer="lars", lr=0.4, lars=LarsConfig(rule="solo", eta=0.02, clip_lr=True))
    opt = build_optimizer([net], cfg)
    assert isinstance(opt, LARS)
    assert [g["rule"] for g in opt.param_groups] == ["solo", "solo"] and opt.param_groups[0]["clip_lr"]
    assert [g["lars_exclude"] for g in opt.param_groups] == [False, True]
    with pytest.raises(ValueError, match="clip_lr is part of the 'solo' rule"):
        LARS(net.parameters(), lr=0.1, rule="fair", clip_lr=True)
    with pytest.raises(ValueError, match="'lamb' is not accepted"):
        LARS(net.parameters(), lr=0.1, rule="lamb")
