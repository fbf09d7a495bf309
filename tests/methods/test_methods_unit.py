"""Every registered method x {small_cnn, resnet18}: two SGD steps on a tiny random batch."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from compmod.config import load_config
from compmod.config.augment_presets import preset_names
from compmod.errors import ConfigError
from compmod.losses import barlow_twins, byol_loss, ntxent
from compmod.methods import METHODS, SSLMethod
from compmod.models import build_backbone

BATCH, SIZE, HIDDEN, PROJ = 8, 32, 32, 16


def _params(name: str, **overrides: object) -> object:
    """The method's typed parameters with small heads, so the test stays fast."""
    cls = METHODS.get(name).params
    small = {"proj_hidden_dim": HIDDEN, "proj_dim": PROJ, "pred_hidden_dim": HIDDEN, **overrides}
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in small.items() if k in fields})


def _build(name: str, backbone: str) -> SSLMethod:
    torch.manual_seed(0)
    # resnet18 with the ImageNet stem keeps this test fast; the CIFAR stem is covered in tests/models.
    net, feat_dim = build_backbone(backbone, 3, cifar_stem=False)
    return METHODS.get(name).build(net, feat_dim, _params(name))


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, SIZE, SIZE, generator=g), torch.randn(BATCH, 3, SIZE, SIZE, generator=g)


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("name", METHODS.names())
def test_method_two_sgd_steps(name: str, backbone: str) -> None:
    method = _build(name, backbone).train()
    assert isinstance(method, SSLMethod)
    trainable = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9)
    before = {k: p.detach().clone() for k, p in method.named_parameters() if p.requires_grad}
    x1, x2 = _views()
    for step in range(2):
        out = method(x1, x2)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss) and out.loss.requires_grad
        assert "ssl" in out.parts and not out.parts["ssl"].requires_grad
        for h in out.h:
            assert h.shape == (BATCH, method.feat_dim) and h.requires_grad
        for z in out.z:
            assert z.shape == (BATCH, PROJ) and z.requires_grad
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        method.after_optimizer_step(progress=(step + 1) / 10)
    after = dict(method.named_parameters())
    for key in before:
        if key.startswith("backbone."):
            assert not torch.equal(before[key], after[key]), f"{key} did not change"
    assert not torch.equal(before["projector.0.weight"], after["projector.0.weight"])
    assert method.encode(x1).shape == (BATCH, method.feat_dim)


@pytest.mark.parametrize("name", ["simclr", "barlow_twins"])
def test_method_loss_is_its_loss_function(name: str) -> None:
    method = _build(name, "small_cnn").train()
    out = method(*_views())
    reference = {
        "simclr": lambda z1, z2: ntxent(z1, z2, method.loss.temperature),
        "barlow_twins": lambda z1, z2: barlow_twins(z1, z2, method.loss.lambda_offdiag),
    }[name]
    assert_close(out.loss, reference(*out.z))


def test_byol_loss_is_symmetric_sum_against_the_target() -> None:
    method = _build("byol", "small_cnn").train()
    x1, x2 = _views()
    out = method(x1, x2)
    with torch.no_grad():
        t1, t2 = method.target(x1), method.target(x2)
        expected = byol_loss(method.predictor(out.z[0]), t2) + byol_loss(method.predictor(out.z[1]), t1)
    assert_close(out.loss.detach(), expected)


def test_byol_target_is_an_ema_without_gradients() -> None:
    method = _build("byol", "small_cnn").train()
    online = nn.Sequential(method.backbone, method.projector)
    for t, s in zip(method.target.parameters(), online.parameters(), strict=True):
        assert torch.equal(t, s) and not t.requires_grad
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        out = method(*_views())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        method.after_optimizer_step(progress=0.0)
    assert all(p.grad is None for p in method.target.parameters())
    pairs = list(zip(method.target.parameters(), online.parameters(), strict=True))
    assert any(not torch.equal(t, s) for t, s in pairs)
    # progress 1 means momentum 1: the target no longer moves
    frozen = [t.clone() for t, _ in pairs]
    method.after_optimizer_step(progress=1.0)
    assert all(torch.equal(t, f) for (t, _), f in zip(pairs, frozen, strict=True))


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [("simclr", "temperature", 0.0), ("byol", "ema_base", 1.5), ("barlow_twins", "lambda_offdiag", -1.0)],
)
def test_builder_rejects_bad_parameter(name: str, field: str, value: float) -> None:
    net, feat_dim = build_backbone("small_cnn", 1, False)
    with pytest.raises(ConfigError, match=f"config key method.{field}: "):
        METHODS.get(name).build(net, feat_dim, _params(name, **{field: value}))


def test_paper_defaults() -> None:
    assert METHODS.get("simclr").params().temperature == 0.5
    assert METHODS.get("barlow_twins").params().lambda_offdiag == 0.0051
    assert METHODS.get("byol").params().ema_base == 0.99
    # the paper's 3-layer head for its three methods; MoCo v2, SwAV, W-MSE keep their official 2-layer heads
    assert all(METHODS.get(n).params().proj_layers == 3 for n in ("simclr", "byol", "barlow_twins"))
    assert all(METHODS.get(n).params().proj_layers == 2 for n in ("moco_v2", "swav", "wmse"))
    assert {METHODS.get(n).augment_preset for n in ("simclr", "byol", "barlow_twins")} == {
        "simclr",
        "byol",
        "barlow_twins",
    }
    assert all(METHODS.get(n).augment_preset in preset_names() for n in METHODS.names())


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("moco_v2", "queue_size", 0),
        ("swav", "sinkhorn_eps", 0.0),
        ("mec", "lambda_warmup", 2.0),
        ("barlow_twins", "lambda_offdiag", -1.0),
        ("wmse", "w_iter", 0),
    ],
)
def test_a_bad_method_value_has_one_message_from_config_and_from_the_builder(name, key, value) -> None:
    with pytest.raises(ConfigError) as from_config:
        load_config(None, [f"method.name={name}", f"method.{key}={value}"])
    spec = METHODS.get(name)
    params = spec.params(**{key: value})
    with pytest.raises(ConfigError) as from_builder:
        spec.build(torch.nn.Identity(), 16, params)
    assert str(from_config.value) == str(from_builder.value)
    assert str(from_builder.value).startswith(f"config key method.{key}: {value!r} is not accepted")
