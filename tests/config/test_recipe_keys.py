"""Config keys the paper presets need to state their recipes value for value (issue 13, item 2):
`train.warmup_start_lr` (solo-learn's scheduler.warmup_start_lr) and `method.scale_loss` (solo-learn's
Barlow Twins method_kwargs.scale_loss), each against a transcription of the solo-learn code it names."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from compmod.config import load_config
from compmod.engine.schedule import warmup_cosine
from compmod.engine.trainer import Trainer
from compmod.errors import ConfigError
from compmod.losses import BarlowTwinsLoss, barlow_twins
from compmod.methods.barlow_twins import build_barlow_twins


def bolts_warmup_cosine(
    total: int, warmup: int, base_lr: float, start_lr: float, eta_min: float = 0.0
) -> list[float]:
    """The lr of every step under solo-learn's `LinearWarmupCosineAnnealingLR` (solo/utils/lr_scheduler.py
    @ d1559571290b82ce48cf441db4d8cc26ce9493d7, from Lightning Bolts), in its chained form `get_lr`, stepped
    once per optimizer step as solo-learn's `interval: step` does."""
    lrs = [start_lr]  # last_epoch 0
    for t in range(1, total):
        lr = lrs[-1]
        if t < warmup:
            lr = lr + (base_lr - start_lr) / (warmup - 1)
        elif t == warmup:
            lr = base_lr
        elif (t - 1 - total) % (2 * (total - warmup)) == 0:
            lr = lr + (base_lr - eta_min) * (1 - math.cos(math.pi / (total - warmup))) / 2
        else:
            ratio = 1 + math.cos(math.pi * (t - warmup) / (total - warmup))
            ratio /= 1 + math.cos(math.pi * (t - warmup - 1) / (total - warmup))
            lr = ratio * (lr - eta_min) + eta_min
        lrs.append(lr)
    return lrs


@pytest.mark.parametrize(("total", "warmup", "base", "start"), [(200, 20, 0.4, 3e-5), (50, 10, 3.6, 4.8e-4)])
def test_warmup_start_lr_matches_solo_learns_scheduler(total, warmup, base, start):
    ours = [warmup_cosine(t, total, warmup, base, 0.0, start_lr=start) for t in range(total)]
    assert ours[0] == start and ours[warmup - 1] == pytest.approx(base, rel=1e-12)
    assert_close(
        torch.tensor(ours), torch.tensor(bolts_warmup_cosine(total, warmup, base, start)), rtol=1e-9, atol=0
    )


def test_warmup_start_lr_edge_cases_and_default():
    assert warmup_cosine(0, 10, 1, 0.5, start_lr=3e-5) == 3e-5  # one warm-up step: at start_lr
    assert warmup_cosine(1, 10, 1, 0.5, start_lr=3e-5) == pytest.approx(0.5)
    assert warmup_cosine(0, 10, 0, 0.5, start_lr=3e-5) == pytest.approx(0.5)  # no warm-up: solo-learn uses lr
    # None keeps compmod's warm-up line, lr * (step + 1) / warm-up steps
    assert [warmup_cosine(t, 100, 4, 0.4) for t in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_warmup_start_lr_config_key():
    assert load_config(None).train.warmup_start_lr is None
    assert load_config(None, ["train.warmup_start_lr=3.0e-5"]).train.warmup_start_lr == 3e-5
    with pytest.raises(ConfigError, match=r"train.warmup_start_lr: -0.1 is not accepted; expected null or a"):
        load_config(None, ["train.warmup_start_lr=-0.1"])


def test_trainer_starts_warmup_at_warmup_start_lr(cifar10_root: Path, tmp_path: Path):
    cfg = load_config(
        None,
        [
            "data.name=cifar10",
            f"data.root={cifar10_root}",
            "train.batch_size=8",
            "train.max_steps=1",
            "train.warmup_epochs=5",
            "train.warmup_start_lr=1.0e-3",
            "train.progress=false",
            "train.threads=1",
            "eval.enabled=false",
            f"train.run_dir={tmp_path / 'run'}",
        ],
    )
    Trainer(cfg).fit()
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["lr"] == 1e-3


def solo_barlow_loss(z1: torch.Tensor, z2: torch.Tensor, lamb: float, scale_loss: float) -> torch.Tensor:
    """solo-learn's `barlow_loss_func` (solo/losses/barlow.py @ 2269ce642e166eca444bb8a74cf88a7b0afeda24),
    one process."""
    n, d = z1.size()
    bn = torch.nn.BatchNorm1d(d, affine=False, dtype=z1.dtype)
    z1, z2 = bn(z1), bn(z2)
    corr = torch.einsum("bi, bj -> ij", z1, z2) / n
    diag = torch.eye(d, dtype=z1.dtype)
    cdif = (corr - diag).pow(2)
    cdif[~diag.bool()] *= lamb
    return scale_loss * cdif.sum()


@pytest.mark.parametrize("scale", [0.1, 0.048, 1.0])
def test_scale_loss_matches_solo_learns_barlow_loss(scale):
    g = torch.Generator().manual_seed(0)
    z1, z2 = (
        torch.randn(16, 8, generator=g, dtype=torch.float64),
        torch.randn(16, 8, generator=g, dtype=torch.float64),
    )
    want = solo_barlow_loss(z1, z2, 0.0051, scale)
    assert_close(barlow_twins(z1, z2, 0.0051, scale), want, rtol=1e-12, atol=0)
    assert_close(BarlowTwinsLoss(0.0051, scale)(z1, z2), want, rtol=1e-12, atol=0)
    assert_close(
        barlow_twins(z1, z2, 0.0051, scale), scale * barlow_twins(z1, z2, 0.0051), rtol=1e-12, atol=0
    )


def test_scale_loss_config_key_reaches_the_loss():
    cfg = load_config(None, ["method.name=barlow_twins", "method.scale_loss=0.048"])
    assert cfg.method.params.scale_loss == 0.048
    method = build_barlow_twins(torch.nn.Flatten(), 12, cfg.method.params)
    assert method.loss.scale_loss == 0.048 and "scale_loss=0.048" in repr(method.loss)
    assert load_config(None, ["method.name=barlow_twins"]).method.params.scale_loss == 1.0  # the paper's loss
    with pytest.raises(ConfigError, match=r"method.scale_loss: 0.0 is not accepted; expected a float > 0"):
        load_config(None, ["method.name=barlow_twins", "method.scale_loss=0"])
    with pytest.raises(ValueError, match="scale_loss must be > 0"):
        BarlowTwinsLoss(0.0051, -1.0)
