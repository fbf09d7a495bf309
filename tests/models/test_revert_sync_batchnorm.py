"""revert_sync_batchnorm: compmod's SyncBatchNorm (and torch's) back to per-process BatchNorm with the same
parameters, buffers, requires_grad, mode and dtype, so that one rank can train a copy alone (issue 14)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compmod.models import build_backbone
from compmod.models.sync_batchnorm import (
    AnyRankBatchNorm,
    SyncBatchNorm,
    convert_sync_batchnorm,
    revert_sync_batchnorm,
)


def _trained_synced_cnn() -> nn.Module:
    """small_cnn (BatchNorm2d and BatchNorm1d) converted as `train.sync_bn` does, float64, after a few
    train-mode passes (running statistics away from their init) and with one BatchNorm frozen."""
    torch.manual_seed(0)
    net, _ = build_backbone("small_cnn", 1, cifar_stem=True)
    net = convert_sync_batchnorm(net).double().train()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, SyncBatchNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
        for _ in range(3):
            net(torch.randn(8, 1, 12, 12, generator=g, dtype=torch.float64) * 2 + 1)
    net[1].weight.requires_grad_(False)
    net[4].eval()
    return net


def test_revert_sync_batchnorm_gives_back_the_replaced_batchnorm_with_identical_state():
    synced = _trained_synced_cnn()
    state = {k: v.clone() for k, v in synced.state_dict().items()}
    plain = revert_sync_batchnorm(copy.deepcopy(synced))
    kinds = [type(m) for m in plain.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert kinds == [nn.BatchNorm2d] * 4 + [nn.BatchNorm1d]  # the classes convert_sync_batchnorm replaced
    after = plain.state_dict()
    assert after.keys() == state.keys()
    for k, v in state.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    assert [p.requires_grad for p in plain.parameters()] == [p.requires_grad for p in synced.parameters()]
    assert [m.training for m in plain.modules()] == [m.training for m in synced.modules()]
    x = torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert torch.equal(plain.eval()(x), synced.eval()(x))
    # in train mode, in one process, too: the same output and the same running-statistics update
    assert torch.equal(plain.train()(x), synced.train()(x))
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in synced.state_dict().items())


@pytest.mark.parametrize("kind", ["compmod", "torch"])
@pytest.mark.parametrize(("affine", "track", "momentum"), [(True, True, 0.1), (False, False, None)])
def test_revert_sync_batchnorm_without_a_recorded_class_takes_any_input_rank(kind, affine, track, momentum):
    make = SyncBatchNorm if kind == "compmod" else nn.SyncBatchNorm
    sync = make(3, eps=1e-3, momentum=momentum, affine=affine, track_running_stats=track).double().eval()
    if track:
        with torch.no_grad():
            sync.running_mean.uniform_(-1, 1)
            sync.running_var.uniform_(0.5, 2)
    plain = revert_sync_batchnorm(copy.deepcopy(sync))  # the root itself is replaced
    assert type(plain) is AnyRankBatchNorm and not plain.training
    hyper = (plain.eps, plain.momentum, plain.affine, plain.track_running_stats)
    assert hyper == (1e-3, momentum, affine, track)
    assert plain.state_dict().keys() == sync.state_dict().keys()
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in sync.state_dict().items())
    g = torch.Generator().manual_seed(0)
    for shape in [(4, 3), (4, 3, 5), (4, 3, 2, 2)]:
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        assert torch.equal(plain(x), sync(x))  # eval mode (batch statistics when none are tracked)
    with pytest.raises(ValueError, match="AnyRankBatchNorm expects"):
        plain(torch.randn(3, dtype=torch.float64))
