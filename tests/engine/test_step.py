"""TrainStep's speed options: precision, channels_last, the fp16 scaler seen by the meta step; BatchSource."""

from __future__ import annotations

import copy

import pytest
import torch

from compmod.config import load_config
from compmod.engine.batches import BatchSource
from compmod.engine.builders import build_compmod, build_method
from compmod.engine.optim import build_optimizer
from compmod.engine.step import TrainStep
from compmod.errors import ConfigError
from compmod.hardware import native_bf16

OVERRIDES = ["method.proj_hidden_dim=32", "method.proj_dim=16", "compmod.enabled=true"]


def _parts(seed: int = 0, batch: int = 16):
    cfg = load_config("configs/fashion_mnist_simclr.yaml", OVERRIDES)
    torch.manual_seed(seed)
    model = build_method(cfg, 1, 28)
    reg = build_compmod(cfg, model, 10)
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(batch, 1, 28, 28, generator=g), torch.randn(batch, 1, 28, 28, generator=g)
    return cfg, model, reg, x1, x2


def _step(model, reg, cfg, **kw) -> TrainStep:
    return TrainStep(model, build_optimizer([model], cfg.train), reg, **kw)


def test_unknown_precision_is_a_config_error():
    cfg, model, reg, _, _ = _parts()
    with pytest.raises(ConfigError, match=r"train.precision: 'fp8'.*fp32, bf16, fp16"):
        _step(model, reg, cfg, precision="fp8")


def test_auto_precision_is_bf16_exactly_where_native():
    cfg, model, reg, x1, x2 = _parts()
    step = _step(model, reg, cfg, precision="auto")
    native = native_bf16(torch.device("cpu"))
    assert step.precision == ("bf16" if native else "fp32")
    assert step.autocast_dtype == (torch.bfloat16 if native else None)
    total, _ = step.step(step.prepare(x1), step.prepare(x2), 0.1)
    assert total.dtype == torch.float32 and torch.isfinite(total)  # losses in fp32 under autocast


def test_channels_last_gives_the_same_step():
    cfg, model, reg, x1, x2 = _parts()
    model2, reg2 = copy.deepcopy(model), copy.deepcopy(reg)
    a = _step(model, reg, cfg, channels_last=False)
    b = _step(model2, reg2, cfg, channels_last=True)
    assert b.prepare(x1).is_contiguous(memory_format=torch.channels_last)
    assert model2.backbone[0].weight.is_contiguous(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in model.parameters()] + [
        p.detach().clone() for p in reg.head.parameters()
    ]
    la, pa = a.step(x1, x2, 0.1)
    lb, pb = b.step(b.prepare(x1), b.prepare(x2), 0.1)
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-6)
    assert float(pa["hypergrad_norm"]) == pytest.approx(float(pb["hypergrad_norm"]), rel=1e-3)
    after_a = [*model.parameters(), *reg.head.parameters()]
    after_b = [*model2.parameters(), *reg2.head.parameters()]
    for p0, p, q in zip(before, after_a, after_b, strict=True):  # the same update, up to fp32 rounding
        assert (p - q).norm() <= 1e-3 * (p - p0).norm() + 1e-7


def test_bf16_autocast_keeps_compmod_losses_in_fp32():
    cfg, model, reg, x1, x2 = _parts()
    step = _step(model, reg, cfg, precision="bf16", channels_last=False)
    ref_step = _step(copy.deepcopy(model), copy.deepcopy(reg), cfg, channels_last=False)
    before = [p.detach().clone() for p in model.parameters()]
    total, parts = step.step(x1, x2, 0.1, 0.5)
    assert total.dtype == torch.float32 and parts["mcr"].dtype == torch.float32
    ref_total, _ = ref_step.step(x1, x2, 0.1, 0.5)
    t, ref = total.item(), ref_total.item()
    assert abs(t - ref) < 0.05 * abs(ref)  # bf16 forward, same loss
    assert parts["hypergrad_norm"] > 0
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_fp16_meta_step_reads_unscaled_gradients(monkeypatch):
    cfg, model, reg, x1, x2 = _parts()
    ref_model, ref_reg = copy.deepcopy(model), copy.deepcopy(reg)
    seen = {}

    def spy(obj, key):
        original = obj.meta_step

        def wrapped(m, *a):
            seen[key] = torch.sqrt(
                sum((p.grad.double() ** 2).sum() for p in m.parameters() if p.grad is not None)
            )
            return original(m, *a)

        monkeypatch.setattr(obj, "meta_step", wrapped)

    spy(reg, "fp16")
    spy(ref_reg, "fp32")
    fp16 = _step(model, reg, cfg, precision="fp16", channels_last=False)
    fp16.scaler = torch.amp.GradScaler("cpu", init_scale=4096.0)  # no overflow on this first step
    fp16.step(x1, x2, 0.1)
    _step(ref_model, ref_reg, cfg, channels_last=False).step(x1, x2, 0.1)
    assert float(seen["fp16"]) == pytest.approx(float(seen["fp32"]), rel=0.05)
    assert "scaler" in fp16.state_dict()


def test_fp16_overflow_skips_the_meta_step_and_the_update():
    cfg, model, reg, x1, x2 = _parts()
    step = _step(model, reg, cfg, precision="fp16", channels_last=False)
    step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**60)  # scaled gradients overflow fp16
    before = [p.detach().clone() for p in [*model.parameters(), *reg.head.parameters()]]
    _, parts = step.step(x1, x2, 0.1)
    assert "hypergrad_norm" not in parts
    assert all(
        torch.equal(p, q) for p, q in zip([*model.parameters(), *reg.head.parameters()], before, strict=True)
    )
    assert step.scaler.get_scale() < 2.0**60


def test_batch_source_on_cpu_indexes_the_dataset():
    images = torch.arange(5 * 4, dtype=torch.uint8).view(5, 1, 2, 2)
    src = BatchSource(images, "cpu")
    idx = torch.tensor([3, 0])
    assert src.mode == "cpu"
    assert torch.equal(src.get(idx), images[idx])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["resident", "pinned"])
def test_batch_source_on_cuda(mode, monkeypatch):
    import compmod.engine.batches as batches

    monkeypatch.setattr(batches, "RESIDENT_MAX_FRACTION", 1.0 if mode == "resident" else 0.0)
    images = torch.randint(0, 255, (64, 3, 8, 8), dtype=torch.uint8)
    src = BatchSource(images, "cuda")
    assert src.mode == mode
    for start in range(0, 64, 8):  # more batches than buffers: buffer reuse must not corrupt them
        idx = torch.arange(start, start + 8).flip(0)
        assert torch.equal(src.get(idx).cpu(), images[idx])


@pytest.mark.slow
def test_compiled_forward_gives_the_same_step():
    cfg, model, reg, x1, x2 = _parts()
    ref_model, ref_reg = copy.deepcopy(model), copy.deepcopy(reg)
    compiled = _step(model, reg, cfg, compile=True, channels_last=False)
    assert compiled.forward_module is not model  # the real forward is compiled ...
    ref = _step(ref_model, ref_reg, cfg, channels_last=False)
    for _ in range(2):
        la, pa = compiled.step(x1, x2, 0.1)
        lb, pb = ref.step(x1, x2, 0.1)
        torch.testing.assert_close(la, lb, rtol=1e-4, atol=1e-5)
        # ... the meta step is not
        assert float(pa["hypergrad_norm"]) == pytest.approx(float(pb["hypergrad_norm"]), rel=1e-3)
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
