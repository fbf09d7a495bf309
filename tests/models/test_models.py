"""Backbones over every registered name, MLP heads, and the EMA teacher."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from compmod.errors import ConfigError
from compmod.models import (
    BACKBONES,
    EMATeacher,
    build_backbone,
    byol_predictor,
    cosine_momentum,
    mlp,
    projector,
)


@pytest.mark.parametrize("name", BACKBONES.names())
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("cifar_stem", [True, False])
def test_backbone_output_shape(name: str, in_channels: int, cifar_stem: bool) -> None:
    torch.manual_seed(0)
    net, feat_dim = build_backbone(name, in_channels, cifar_stem)
    net.train()  # BatchNorm in training mode must cope with tiny final feature maps
    with torch.no_grad():
        for size in (16, 28, 32):
            h = net(torch.randn(2, in_channels, size, size))
            assert h.shape == (2, feat_dim), (size, h.shape)
            assert torch.isfinite(h).all()


def test_backbone_feature_dims() -> None:
    assert build_backbone("small_cnn", 1, False)[1] == 512
    assert build_backbone("resnet18", 3, True)[1] == 512


def test_resnet_stems() -> None:
    cifar, _ = build_backbone("resnet18", 1, cifar_stem=True)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1) and cifar.conv1.in_channels == 1
    assert isinstance(cifar.maxpool, nn.Identity) and isinstance(cifar.fc, nn.Identity)
    imagenet, _ = build_backbone("resnet18", 3, cifar_stem=False)
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)


def test_small_cnn_has_batchnorm_and_gradients() -> None:
    net, _ = build_backbone("small_cnn", 1, False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    net(torch.randn(4, 1, 28, 28)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_build_backbone_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean resnet18"):
        build_backbone("resnet19", 3, False)
    with pytest.raises(ConfigError, match="in_channels"):
        build_backbone("small_cnn", 0, False)


# --- heads --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_mlp_shapes_and_layout(num_layers: int) -> None:
    head = mlp(7, 16, 5, num_layers)
    assert head(torch.randn(4, 7)).shape == (4, 5)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert len(linears) == num_layers
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head) == num_layers - 1
    assert isinstance(head[-1], nn.Linear) and head[-1].bias is not None


def test_mlp_last_bn() -> None:
    head = mlp(7, 16, 5, 2, last_bn=True, last_bn_affine=False)
    assert isinstance(head[-1], nn.BatchNorm1d) and not head[-1].affine
    assert head[-2].bias is None
    out = head(torch.randn(8, 7))
    assert_close(out.mean(0), torch.zeros(5), atol=1e-5, rtol=0)


def test_mlp_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        mlp(4, 4, 4, 0)
    with pytest.raises(ValueError, match="out_dim"):
        mlp(4, 4, 0, 2)


def test_projector_and_predictor_shapes() -> None:
    proj = projector(32, 64, 16)
    assert sum(isinstance(m, nn.Linear) for m in proj) == 3
    assert proj(torch.randn(4, 32)).shape == (4, 16)
    pred = byol_predictor(16, 24)
    assert sum(isinstance(m, nn.Linear) for m in pred) == 2
    assert pred(torch.randn(4, 16)).shape == (4, 16)


# --- EMA ----------------------------------------------------------------------------------------------


def _student() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_ema_teacher_is_a_frozen_copy() -> None:
    student = _student()
    teacher = EMATeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    x = torch.randn(5, 3)
    out = teacher(x)
    assert not out.requires_grad
    assert_close(out, student(x))


def test_ema_teacher_update_math() -> None:
    torch.manual_seed(0)
    student = _student()
    teacher = EMATeacher(student)
    old = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student(torch.randn(6, 3))  # changes the student's BN running statistics
    teacher.update(student, momentum=1.0)
    for t, o in zip(teacher.parameters(), old, strict=True):
        assert torch.equal(t, o)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        assert torch.equal(t, s)  # buffers are copied whatever the momentum
    teacher.update(student, momentum=0.75)
    for t, o, s in zip(teacher.parameters(), old, student.parameters(), strict=True):
        assert_close(t, 0.75 * o + 0.25 * s)
    teacher.update(student, momentum=0.0)
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        assert torch.equal(t, s)
    with pytest.raises(ValueError, match="momentum"):
        teacher.update(student, momentum=1.5)


def test_ema_teacher_cache_returns_fresh_outputs_only() -> None:
    """Cached outputs are reused only for the same input tensor and unchanged teacher weights."""
    torch.manual_seed(0)
    student = _student()
    teacher = EMATeacher(student)
    calls = []
    teacher.module.register_forward_hook(lambda *_: calls.append(1))
    x1, x2 = torch.randn(5, 3), torch.randn(5, 3)
    a1, a2 = teacher(x1), teacher(x2)
    assert teacher(x1) is a1 and teacher(x2) is a2 and len(calls) == 2  # both views cached
    assert_close(teacher(x1.clone()), a1)  # an equal but different tensor is recomputed
    assert len(calls) == 3
    x1.add_(1.0)  # in-place change of the input
    assert not torch.equal(teacher(x1), a1)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)  # the student moves, the teacher does not: its cache stays valid
    b2 = teacher(x2)
    assert teacher(x2) is b2
    assert_close(b2, a2)
    teacher.update(student, momentum=0.5)  # EMA step: cache cleared, new weights used
    assert_close(teacher(x2), teacher.module(x2))
    state = {k: v + 1 for k, v in teacher.state_dict().items() if v.is_floating_point()}
    before = teacher(x2)
    teacher.load_state_dict(state, strict=False)  # loading weights bumps their versions
    assert not torch.equal(teacher(x2), before)
    teacher.eval()  # eval mode depends on the running statistics too
    e = teacher(x2)
    teacher.module[1].running_mean.add_(1.0)
    assert not torch.equal(teacher(x2), e)


def test_ema_teacher_in_owner_state_dict() -> None:
    owner = nn.Module()
    owner.target = EMATeacher(_student())
    assert "target.module.0.weight" in owner.state_dict()


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99, abs=1e-15)
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0, abs=1e-15)
    assert cosine_momentum(0.99, 0.5) == pytest.approx(0.995, abs=1e-15)
    # BYOL, Sec. 3.3: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2
    assert cosine_momentum(0.996, 0.3) == pytest.approx(1 - 0.004 * (math.cos(0.3 * math.pi) + 1) / 2)
    values = [cosine_momentum(0.9, k / 10) for k in range(11)]
    assert values == sorted(values)
    assert cosine_momentum(0.9, 1.2) == cosine_momentum(0.9, 1.0)  # clamped
    with pytest.raises(ValueError, match="base"):
        cosine_momentum(1.1, 0.5)
