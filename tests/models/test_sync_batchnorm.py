"""SyncBatchNorm: in one process exactly nn.BatchNorm; over two gloo processes exactly BatchNorm on the
global batch, for the output, backward, double backward, forward-mode tangents and running statistics."""

from __future__ import annotations

import torch
from tests.distributed.spawn import run_ranks
from tests.distributed.workers import batchnorm_all_orders
from torch import nn
from torch.testing import assert_close

from compmod.models import build_backbone
from compmod.models.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64) * 2 + 1
    return x, torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)


def test_one_process_equals_batchnorm_in_train_and_eval():
    x, _ = _inputs()
    ref, sync = nn.BatchNorm2d(3).double(), SyncBatchNorm(3).double()
    sync.load_state_dict(ref.state_dict())
    for _ in range(2):
        assert torch.equal(sync(x), ref(x))
    assert torch.equal(sync.running_var, ref.running_var) and int(sync.num_batches_tracked) == 2
    assert torch.equal(sync.eval()(x), ref.eval()(x))


def test_convert_keeps_parameters_buffers_and_outputs():
    torch.manual_seed(0)
    net, _ = build_backbone("small_cnn", 1, cifar_stem=True)
    net.train()
    x = torch.randn(4, 1, 12, 12)
    before = net(x).detach()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(0)
    net2, _ = build_backbone("small_cnn", 1, cifar_stem=True)
    converted = convert_sync_batchnorm(net2.train())
    kinds = {type(m) for m in converted.modules()}
    assert SyncBatchNorm in kinds and nn.BatchNorm2d not in kinds
    assert converted.state_dict().keys() == state.keys()
    assert_close(converted(x), before, rtol=0, atol=0)


def test_two_processes_equal_batchnorm_on_the_global_batch(tmp_path):
    x, t = _inputs()
    # reference: one process, plain BatchNorm on all 8 rows (same init as the worker)
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    w = torch.linspace(-1, 1, x[0].numel(), dtype=x.dtype).view_as(x[0])
    xg = x.clone().requires_grad_()
    y = bn(xg)
    (gx,) = torch.autograd.grad((y * w).sum(), xg, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.pow(2).sum(), xg)
    with torch.autograd.forward_ad.dual_level():
        ty = torch.autograd.forward_ad.unpack_dual(
            nn.functional.batch_norm(
                torch.autograd.forward_ad.make_dual(x, t),
                None,
                None,
                bn.weight.detach(),
                bn.bias.detach(),
                True,
            )
        ).tangent
    ranks = run_ranks(batchnorm_all_orders, tmp_path, x, t)
    got = {k: torch.cat([r[k] for r in ranks]) for k in ("y", "gx", "ggx", "ty")}
    # one process's double-backward term is the sum over ranks of d/dx of each rank's objective
    assert_close(got["y"], y.detach(), rtol=1e-12, atol=1e-12)
    assert_close(got["gx"], gx.detach(), rtol=1e-12, atol=1e-12)
    assert_close(got["ty"], ty, rtol=1e-12, atol=1e-12)
    assert_close(got["ggx"], ggx, rtol=1e-12, atol=1e-12)
    for r in ranks:
        assert_close(r["running_mean"], bn.running_mean, rtol=1e-12, atol=1e-12)
        assert_close(r["running_var"], bn.running_var, rtol=1e-12, atol=1e-12)
