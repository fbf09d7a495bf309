"""Feature extraction: batching, eval mode and its restoration, dtype and device of the output."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compmod.eval.features import extract_features


def make_encoder() -> nn.Module:
    """Output depends on the mode: BatchNorm uses batch vs running statistics, Dropout is random in train."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.BatchNorm1d(16), nn.Dropout(0.5), nn.ReLU())
    with torch.no_grad():
        encoder[2].running_mean.uniform_(-1, 1)
        encoder[2].running_var.uniform_(0.5, 2)
    return encoder


def transform(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255).sub(0.5)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randint(0, 256, (37, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("batch_size", [1, 5, 37, 512])
def test_extract_features_equals_direct_eval_forward(images, batch_size):
    encoder = make_encoder().train()
    feats = extract_features(encoder, images, transform, batch_size=batch_size)
    with torch.no_grad():
        want = encoder.eval()(transform(images))
    assert feats.shape == (37, 16) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    torch.testing.assert_close(feats, want)


def test_extract_features_restores_each_modules_mode(images):
    encoder = make_encoder().train()
    encoder[2].eval()  # a frozen BatchNorm inside a training encoder must stay frozen
    before = encoder[2].running_mean.clone()
    extract_features(encoder, images, transform, batch_size=8)
    assert encoder.training and encoder[1].training and not encoder[2].training and encoder[3].training
    torch.testing.assert_close(encoder[2].running_mean, before, rtol=0, atol=0)  # stats untouched
    encoder.eval()
    extract_features(encoder, images, transform)
    assert not any(m.training for m in encoder.modules())


def test_extract_features_restores_mode_when_the_encoder_raises(images):
    encoder = make_encoder().train()

    def failing_transform(x: torch.Tensor) -> torch.Tensor:
        assert not encoder.training  # the pass itself runs in eval mode
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        extract_features(encoder, images, failing_transform)
    assert all(m.training for m in encoder.modules())


def test_extract_features_puts_the_owner_of_a_bound_method_in_eval(images):
    class Method(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = make_encoder()

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    method = Method().train()
    feats = extract_features(method.encode, images, transform, batch_size=10)
    with torch.no_grad():
        want = method.backbone.eval()(transform(images))
    torch.testing.assert_close(feats, want)
    method.train()
    extract_features(method.encode, images, transform)
    assert method.training and method.backbone[2].training


def test_extract_features_plain_callable_flattens_and_casts_to_float32(images):
    def encoder(x: torch.Tensor) -> torch.Tensor:
        return x.double().mean(dim=1, keepdim=True)  # (B, 1, H, W) float64

    feats = extract_features(encoder, images, transform, batch_size=6, progress=True)
    assert feats.shape == (37, 16) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, transform(images).mean(dim=1).reshape(37, 16))


def test_extract_features_rejects_bad_inputs(images):
    with pytest.raises(ValueError, match="non-empty"):
        extract_features(make_encoder(), images[:0], transform)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        extract_features(make_encoder(), images, transform, batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_extract_features_on_cuda_matches_cpu(images):
    encoder = make_encoder()
    cpu = extract_features(encoder, images, transform, batch_size=8)
    gpu = extract_features(encoder.cuda(), images, transform, batch_size=8, device="cuda")
    assert gpu.device.type == "cpu" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)
