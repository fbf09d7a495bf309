"""MoCo v2 and SwAV as methods: the loss is their loss function on their own outputs, forward has no side
effects (CompMod's look-ahead re-runs it), queues and step counters live in buffers and resume exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.helpers import method_overrides
from torch import nn
from torch.testing import assert_close

from compmod.config import load_config
from compmod.engine.builders import build_method
from compmod.errors import ConfigError
from compmod.losses.moco import infonce_queue
from compmod.losses.swav import swav_loss
from compmod.meta.functional import stateless_forward, trainable
from compmod.methods import METHODS, SSLMethod
from compmod.models import FeatureQueue, build_backbone
from compmod.regularizers import CompMod

BATCH, SIZE, HIDDEN, PROJ = 8, 12, 32, 16
NAMES = ("moco_v2", "swav")
TOL = {"rtol": 1e-10, "atol": 1e-12}


def build(name: str, *extra: str, seed: int = 0, dtype: torch.dtype = torch.float64) -> SSLMethod:
    overrides = [
        *method_overrides(name),
        f"method.proj_hidden_dim={HIDDEN}",
        f"method.proj_dim={PROJ}",
        *extra,
    ]
    torch.manual_seed(seed)
    return build_method(load_config(None, overrides), 1, SIZE).to(dtype=dtype).train()


def views(seed: int = 1, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(BATCH, 1, SIZE, SIZE, generator=g, dtype=dtype) for _ in range(2))  # type: ignore[return-value]


def sgd_step(
    model: SSLMethod, opt: torch.optim.Optimizer, x1: torch.Tensor, x2: torch.Tensor
) -> torch.Tensor:
    out = model(x1, x2)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    model.after_optimizer_step(progress=0.0)
    return out.loss.detach()


def state_buffers(model: SSLMethod) -> dict[str, torch.Tensor]:
    """The method's own state: queue, pointer, fill count, step counter (not BatchNorm statistics)."""
    return {n: b.clone() for n, b in model.named_buffers() if n.startswith("queue.") or n == "step"}


def keys(model: SSLMethod, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(model.key_encoder(x), dim=1)


# --- MoCo v2 ------------------------------------------------------------------------------------------


def test_moco_loss_is_the_symmetric_queue_infonce_of_its_outputs() -> None:
    model = build("moco_v2")
    x1, x2 = views()
    out = model(x1, x2)
    z1, z2 = out.z
    rows = model.queue.rows
    expected = (
        infonce_queue(z1, keys(model, x2), rows[1], 0.2) + infonce_queue(z2, keys(model, x1), rows[0], 0.2)
    ) / 2
    assert_close(out.loss, expected, **TOL)
    assert out.h[0].shape == (BATCH, model.feat_dim) and z1.shape == (BATCH, PROJ)


def test_moco_head_has_no_batchnorm_and_the_key_encoder_starts_as_a_frozen_copy() -> None:
    model = build("moco_v2")
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.projector.modules())
    assert [type(m) for m in model.projector] == [nn.Linear, nn.ReLU, nn.Linear]
    assert all(m.bias is not None for m in model.projector if isinstance(m, nn.Linear))
    online = nn.Sequential(model.backbone, model.projector)
    for k, q in zip(model.key_encoder.parameters(), online.parameters(), strict=True):
        assert torch.equal(k, q) and not k.requires_grad
    # the initial queue: unit-norm random keys, the same for every build (seeded, global RNG untouched)
    assert_close(model.queue.rows.norm(dim=2), torch.ones(2, 64, dtype=torch.float64), rtol=0, atol=1e-6)
    assert torch.equal(model.queue.rows, build("moco_v2", seed=5).queue.rows)


def test_moco_keys_get_no_gradient_and_the_key_encoder_is_an_ema() -> None:
    model = build("moco_v2")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before = [p.clone() for p in model.key_encoder.parameters()]
    x1, x2 = views()
    out = model(x1, x2)
    assert not model._pending.requires_grad
    out.loss.backward()
    assert all(p.grad is None for p in model.key_encoder.parameters())
    opt.step()
    model.after_optimizer_step(progress=0.0)  # momentum 0.99 at progress 0
    online = nn.Sequential(model.backbone, model.projector).parameters()
    for k, k0, q in zip(model.key_encoder.parameters(), before, online, strict=True):
        assert_close(k, 0.99 * k0 + 0.01 * q.detach(), **TOL)


def test_moco_enqueues_the_last_keys_at_the_pointer_with_wraparound() -> None:
    model = build("moco_v2", "method.queue_size=12")
    initial = model.queue.rows.clone()
    xa, xb = views(1), views(2)
    model(*xa)
    ka = torch.stack([keys(model, xa[0]), keys(model, xa[1])])
    model.after_optimizer_step(progress=0.0)
    rows = model.queue.rows
    assert torch.equal(rows[:, :8], ka) and torch.equal(rows[:, 8:], initial[:, 8:])
    assert int(model.queue.ptr) == 8 and model._pending is None
    model(*xb)
    kb = torch.stack([keys(model, xb[0]), keys(model, xb[1])])
    model.after_optimizer_step(progress=0.0)
    assert torch.equal(rows[:, 8:12], kb[:, :4]) and torch.equal(rows[:, :4], kb[:, 4:])
    assert torch.equal(rows[:, 4:8], ka[:, 4:])
    assert int(model.queue.ptr) == 4
    model.after_optimizer_step(progress=0.0)  # no forward since: nothing to enqueue
    assert int(model.queue.ptr) == 4


def test_feature_queue_push_equals_pushing_one_key_at_a_time() -> None:
    """Naive reference: a FIFO written row by row; also more keys than rows (the last `size` stay)."""
    new = torch.randn(2, 5, 3)
    for start in range(3):
        queue, naive = FeatureQueue(2, 3, 3, seed=1), FeatureQueue(2, 3, 3, seed=1)
        for q in (queue, naive):
            q.push_(torch.randn(2, start, 3, generator=torch.Generator().manual_seed(start)))
        queue.push_(new)
        for i in range(5):
            naive.push_(new[:, i : i + 1])
        assert torch.equal(queue.rows, naive.rows) and int(queue.ptr) == int(naive.ptr) == (start + 5) % 3
    empty = FeatureQueue(1, 4, 2)
    assert not empty.full and int(empty.filled) == 0
    empty.push_(torch.ones(1, 3, 2))
    assert not empty.full
    empty.push_(torch.ones(1, 3, 2))
    assert empty.full and int(empty.filled) == 4


# --- SwAV ---------------------------------------------------------------------------------------------


def test_swav_loss_is_swav_loss_of_its_normalised_outputs() -> None:
    model = build("swav")
    out = model(*views())
    w = model.prototypes.weight
    s1, s2 = (F.normalize(z, dim=1) @ w.T for z in out.z)
    assert_close(out.loss, swav_loss(s1, s2, 0.1, 0.05, 3), **TOL)


def test_swav_prototypes_are_unit_rows_after_each_step_and_frozen_first() -> None:
    model = build("swav", "method.freeze_prototypes_steps=2")
    w = model.prototypes.weight
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5, weight_decay=0.1)
    x1, x2 = views()
    for step in range(3):
        before = w.detach().clone()
        sgd_step(model, opt, x1, x2)
        assert_close(w.norm(dim=1), torch.ones(10, dtype=torch.float64), **TOL)
        if step < 2:  # no gradient: SGD skips the prototypes, weight decay included
            assert w.grad is None
            assert_close(w.detach(), before, rtol=0, atol=1e-7)
        else:
            assert w.grad is not None and not torch.allclose(w.detach(), before, atol=1e-4)
    assert int(model.step) == 3
    # DDP must look for parameters without gradient while the prototypes can be frozen
    assert model.unused_parameters and not build("swav", "method.freeze_prototypes_steps=0").unused_parameters
    assert not build("moco_v2").unused_parameters


def test_swav_queue_fills_from_its_start_step_and_is_used_once_full() -> None:
    model = build(
        "swav", "method.queue_size=12", "method.queue_start_step=1", "method.freeze_prototypes_steps=0"
    )
    x1, x2 = views()
    w = model.prototypes.weight
    filled = []
    for _ in range(3):
        out = model(x1, x2)
        s1, s2 = (F.normalize(z, dim=1) @ w.T for z in out.z)
        assert_close(out.loss, swav_loss(s1, s2, 0.1, 0.05, 3), **TOL)  # queue not full: not used
        model.after_optimizer_step(progress=0.0)
        filled.append(int(model.queue.filled))
    assert filled == [0, 8, 12] and int(model.queue.ptr) == 4
    e = torch.stack([F.normalize(z, dim=1) for z in out.z]).detach()
    assert torch.equal(model.queue.rows[:, 8:], e[:, :4]) and torch.equal(model.queue.rows[:, :4], e[:, 4:])
    out = model(x1, x2)
    s1, s2 = (F.normalize(z, dim=1) @ w.T for z in out.z)
    q1, q2 = model.queue.rows @ w.detach().T
    assert_close(out.loss, swav_loss(s1, s2, 0.1, 0.05, 3, q1, q2), **TOL)
    assert not torch.allclose(out.loss, swav_loss(s1, s2, 0.1, 0.05, 3), rtol=1e-6)


# --- both: the contract CompMod relies on ------------------------------------------------------------

QUEUED = {"moco_v2": [], "swav": ["method.queue_size=16", "method.freeze_prototypes_steps=0"]}


def _fill_queue(model: SSLMethod) -> None:
    if model.queue is not None and not model.queue.full:  # SwAV: a full queue, so it takes part
        model(*views(7))
        model.after_optimizer_step(progress=0.0)
        model(*views(8))
        model.after_optimizer_step(progress=0.0)
        assert model.queue.full


@pytest.mark.parametrize("name", NAMES)
def test_forward_has_no_side_effects(name: str) -> None:
    model = build(name, *QUEUED[name])
    _fill_queue(model)
    x1, x2 = views()
    state = state_buffers(model)
    first, second = model(x1, x2).loss, model(x1, x2).loss
    assert torch.equal(first, second)
    after = state_buffers(model)
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    model.eval()  # in eval mode not even the BatchNorm statistics move
    full = {k: v.clone() for k, v in model.state_dict().items()}
    assert torch.equal(model(x1, x2).loss, model(x1, x2).loss)
    assert all(torch.equal(full[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", NAMES)
def test_lookahead_pass_records_nothing(name: str) -> None:
    """A stateless re-run (functional_call with other parameters) leaves the pending batch and every
    buffer of the real module alone, so the after-step hook enqueues the real step's keys."""
    model = build(name, *QUEUED[name])
    _fill_queue(model)
    x1, x2 = views()
    model(x1, x2)
    pending = model._pending
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    shifted = {n: p.detach() + 0.01 for n, p in trainable(model).items()}
    stateless_forward(model, shifted, x1, x2)
    assert model._pending is pending
    assert all(torch.equal(buffers[n], b) for n, b in model.named_buffers())


@pytest.mark.parametrize("name", NAMES)
def test_compmod_exact_and_jvp_hypergradients_agree(name: str) -> None:
    model = build(name, *QUEUED[name])
    _fill_queue(model)
    reg = CompMod(model.feat_dim, PROJ).to(dtype=torch.float64)
    x1, x2 = views()
    model.zero_grad(set_to_none=True)
    out = model(x1, x2)
    r = reg.regularize(out.h, out.z)
    (out.loss + r.loss).backward()
    g = {}
    for mode in ("exact", "jvp"):
        reg.mode = mode
        g[mode] = reg.hypergradient(model, x1, x2, 0.5, r.context)
    num = sum(float((a - b).pow(2).sum()) for a, b in zip(g["exact"], g["jvp"], strict=True)) ** 0.5
    den = sum(float(a.pow(2).sum()) for a in g["exact"]) ** 0.5
    assert den > 0 and num <= 1e-10 * den


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resumes_queue_pointer_and_step_exactly(name: str) -> None:
    extra = [*QUEUED[name], "method.queue_size=12"]
    model = build(name, *extra)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for seed in (1, 2):
        sgd_step(model, opt, *views(seed))
    state = model.state_dict()
    assert {"queue.rows", "queue.ptr", "queue.filled"} <= state.keys()
    assert name != "swav" or int(state["step"]) == 2
    resumed = build(name, *extra, seed=3)
    resumed.load_state_dict(state)
    opt_resumed = torch.optim.SGD([p for p in resumed.parameters() if p.requires_grad], lr=0.1)
    for seed in (3, 4):
        assert torch.equal(sgd_step(model, opt, *views(seed)), sgd_step(resumed, opt_resumed, *views(seed)))
    a, b = model.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("moco_v2", "temperature", 0.0),
        ("moco_v2", "queue_size", 0),
        ("moco_v2", "ema_base", 1.5),
        ("moco_v2", "proj_layers", 0),
        ("swav", "num_prototypes", 0),
        ("swav", "temperature", -0.1),
        ("swav", "sinkhorn_iters", 0),
        ("swav", "sinkhorn_eps", 0.0),
        ("swav", "queue_size", -1),
        ("swav", "queue_start_step", -1),
        ("swav", "freeze_prototypes_steps", -1),
    ],
)
def test_builder_rejects_bad_parameter(name: str, field: str, value: float) -> None:
    spec = METHODS.get(name)
    net, feat_dim = build_backbone("small_cnn", 1, False)
    with pytest.raises(ConfigError, match=f"config key method.{field}: {value!r} is not accepted; expected"):
        spec.build(net, feat_dim, spec.params(**{field: value}))


def test_defaults_follow_the_official_code() -> None:
    moco, swav = METHODS.get("moco_v2"), METHODS.get("swav")
    m = moco.params()
    assert (m.proj_hidden_dim, m.proj_dim, m.proj_layers) == (2048, 128, 2)
    assert (m.temperature, m.queue_size, m.ema_base) == (0.2, 65536, 0.99)
    s = swav.params()
    assert (s.proj_hidden_dim, s.proj_dim, s.proj_layers, s.num_prototypes) == (2048, 128, 2, 3000)
    assert (s.temperature, s.sinkhorn_iters, s.sinkhorn_eps) == (0.1, 3, 0.05)
    assert (s.queue_size, s.queue_start_step, s.freeze_prototypes_steps) == (0, 0, 313)
    assert moco.augment_preset == swav.augment_preset == "simclr"
