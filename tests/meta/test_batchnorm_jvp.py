"""The lean forward-mode BatchNorm rule against torch's own JVP (the independent reference), in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from compmod.meta.batchnorm_jvp import _TrainBatchNorm, lean_batchnorm_jvp


def _bn(module: nn.Module, affine_tangents: bool, x: torch.Tensor):
    params = {n: p.detach() for n, p in module.named_parameters()}
    tangents = {n: torch.randn_like(p) if affine_tangents else torch.zeros_like(p) for n, p in params.items()}
    dx = torch.randn_like(x)

    def f(p, x):
        return functional_call(module, (p, {k: b.clone() for k, b in module.named_buffers()}), (x,))

    return f, (params, x), (tangents, dx)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # torch's own reference JVP
@pytest.mark.parametrize("shape", [(6, 4, 5, 3), (9, 4), (5, 4, 7)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("affine_tangents", [True, False])
def test_lean_rule_matches_torch_jvp(shape, affine, affine_tangents):
    torch.manual_seed(0)
    module = {4: nn.BatchNorm2d, 2: nn.BatchNorm1d, 3: nn.BatchNorm1d}[len(shape)](4, affine=affine).double()
    if affine:
        nn.init.normal_(module.weight)
        nn.init.normal_(module.bias)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 1
    f, primals, tangents = _bn(module, affine_tangents, x)
    y_ref, t_ref = jvp(f, primals, tangents)
    with lean_batchnorm_jvp():
        y, t = jvp(f, primals, tangents)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(t, t_ref, rtol=1e-12, atol=1e-12)
    assert t.abs().max() > 0.1  # a real tangent was compared


def test_lean_rule_is_used_in_training_mode_only(monkeypatch):
    calls = []
    original = _TrainBatchNorm.apply
    monkeypatch.setattr(_TrainBatchNorm, "apply", lambda *a: calls.append(1) or original(*a))
    module = nn.BatchNorm1d(3).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    with lean_batchnorm_jvp():
        module.train()(x)
        assert len(calls) == 1
        module.eval()(x)  # eval mode: running statistics, torch's own path
        assert len(calls) == 1
        F.relu(x)  # other functions pass through untouched
    assert len(calls) == 1


def test_lean_rule_refuses_reverse_mode():
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    with lean_batchnorm_jvp():
        y = F.batch_norm(x, None, None, training=True)
    with pytest.raises(RuntimeError, match="forward-mode only"):
        y.sum().backward()
