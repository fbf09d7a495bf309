"""The encoder as evaluation runs it: BatchNorm folded (same features up to float32 rounding), bf16 autocast
only where asked or native, the caller's module untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compmod.eval.inference import fold_batchnorm, inference_encoder, resolve_precision
from compmod.hardware import native_bf16
from compmod.models.backbones import build_backbone


def trained_like(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, as after training (fresh ones fold to identity)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return net


def batchnorms(net: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@pytest.mark.parametrize(("name", "channels", "size"), [("small_cnn", 1, 28), ("resnet18", 3, 32)])
def test_folding_removes_every_batchnorm_and_keeps_the_features(name, channels, size):
    net, _ = build_backbone(name, channels, cifar_stem=True)
    net = trained_like(net).train()
    x = torch.randn(8, channels, size, size, generator=torch.Generator().manual_seed(1))
    folded = fold_batchnorm(net)
    assert batchnorms(net) > 0 and batchnorms(folded) == 0
    assert net.training, "the caller's module keeps its mode"
    with torch.no_grad():
        want, got = net.eval()(x), folded(x)
    # Different code paths (a scaled convolution instead of convolution then affine BatchNorm): float32
    # rounding of ~10^3-term sums over a few layers, relative ~1e-6 of features of size ~1, so 1e-4 is
    # ~100x the expected error while a missing BatchNorm or a wrong statistic changes features by ~0.1-1.
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_module_fx_cannot_trace_is_evaluated_unfolded():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))

        def forward(self, x):
            return self.body(x) if x.sum() > 0 else -self.body(x)  # data-dependent: not traceable

    net = trained_like(Branchy())
    copy = fold_batchnorm(net)
    assert copy is not net and batchnorms(copy) == 1 and not copy.training
    x = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(copy(x), net.eval()(x))  # the same module replayed


def test_bf16_extraction_runs_under_autocast_and_stays_close():
    net, _ = build_backbone("small_cnn", 1, cifar_stem=True)
    net = trained_like(net).eval()
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    cpu = torch.device("cpu")
    with torch.no_grad():
        fp32 = inference_encoder(net, "fp32", cpu)(x)
        bf16 = inference_encoder(net, "bf16", cpu)(x)
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    # bf16 keeps 8 mantissa bits: a few 2^-9 relative errors per layer over 5 layers, so within 5 % of the
    # features' scale; float32 would differ by ~1e-6, and a failure to autocast would give float32.
    scale = fp32.abs().max()
    assert (bf16.float() - fp32).abs().max() < 0.05 * scale
    assert (bf16.float() - fp32).abs().max() > 0


def test_a_plain_callable_is_only_wrapped():
    def f(x):
        return x * 2

    assert inference_encoder(f, "fp32", torch.device("cpu")) is f
    out = inference_encoder(f, "bf16", torch.device("cpu"))(torch.ones(2, 3))
    assert torch.equal(out, torch.full((2, 3), 2.0))  # elementwise ops are not autocast


def test_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("auto", cpu, torch.float64) == "fp32"  # a float64 run stays float64
    with pytest.raises(ValueError, match="'fp16'.*auto"):
        resolve_precision("fp16", cpu)


def test_a_sync_bn_encoder_is_folded_too() -> None:
    # train.sync_bn installs compmod's SyncBatchNorm; fx's fuse only knows BatchNorm1d/2d
    from compmod.models.sync_batchnorm import convert_sync_batchnorm

    torch.manual_seed(0)
    encoder, _ = build_backbone("small_cnn", 1, True)
    convert_sync_batchnorm(encoder)
    folded = fold_batchnorm(encoder)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.randn(4, 1, 28, 28)
    # the same rounding bound as the unsynchronised folding test of this file
    assert torch.allclose(folded(x), encoder.eval()(x), atol=1e-4)
