"""The CompMod plug-in on its own: the `off` mode, side effects of the look-ahead, `every`, mixup fusion."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.helpers import method_overrides

from compmod.config import load_config
from compmod.engine.builders import build_method
from compmod.errors import ConfigError
from compmod.losses import comp_loss, mcr_loss
from compmod.meta.functional import trainable
from compmod.methods import METHODS, SSLMethod
from compmod.regularizers import FUSIONS, CompMod, fuse

BATCH, SIZE, HIDDEN, PROJ = 8, 12, 32, 16
METHOD_NAMES = ("simclr", "byol", "barlow_twins")
MODES = ("exact", "jvp", "off")


def build(name: str, dtype: torch.dtype = torch.float64) -> SSLMethod:
    overrides = [*method_overrides(name), f"method.proj_hidden_dim={HIDDEN}", f"method.proj_dim={PROJ}"]
    torch.manual_seed(0)
    return build_method(load_config(None, overrides), 1, SIZE).to(dtype=dtype)


def views(dtype: torch.dtype = torch.float64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(BATCH, 1, SIZE, SIZE, generator=g, dtype=dtype) for _ in range(2))


def real_step(model: SSLMethod, reg: CompMod, x1: torch.Tensor, x2: torch.Tensor):
    """The real step's forward and backward: (the method's output, the context of its meta step)."""
    model.zero_grad(set_to_none=True)
    out = model(x1, x2)
    r = reg.regularize(out.h, out.z)
    (out.loss + r.loss).backward()
    return out, r.context


def norm(gs: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in gs)))


# ---- acceptance 3: the `off` mode is lambda2 * grad L_comp and nothing else -------------------------
@pytest.mark.parametrize("fusion", FUSIONS)
def test_off_mode_is_lambda2_grad_comp_only(fusion):
    model = build("simclr")
    reg = CompMod(model.feat_dim, PROJ, fusion=fusion, mixup_alpha=0.3, lambda2=0.7, mode="off").to(
        dtype=torch.float64
    )
    x1, x2 = views()
    head = copy.deepcopy(reg.head)  # independent copy, taken before regularize touches the BN stats
    out, ctx = real_step(model, reg, x1, x2)
    g_off = reg.hypergradient(model, x1, x2, 0.5, ctx)

    # independently: a fresh forward of the head on the real step's (detached) h and z
    h = tuple(t.detach() for t in out.h)
    z = tuple(t.detach() for t in out.z)
    alpha = ctx.alpha  # the alpha the real step used (None unless mixup_h)
    if fusion == "mixup_h":
        torch.testing.assert_close(alpha, torch.full((BATCH, 1), 0.3, dtype=torch.float64), rtol=0, atol=1e-7)
    z_hat = head(fuse(fusion, h, z, alpha))
    lam = reg.current_lambda(BATCH, PROJ)
    expected = torch.autograd.grad(0.7 * comp_loss(z_hat, lam), list(head.parameters()))
    assert len(g_off) == len(expected) == 5
    for a, b in zip(g_off, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-16)
    assert norm(g_off) > 0

    # lambda2 = 0: exactly zero, whatever the look-ahead would have said
    reg.lambda2 = 0.0
    assert all(torch.equal(g, torch.zeros_like(g)) for g in reg.hypergradient(model, x1, x2, 0.5, ctx))

    # lambda1 > 0: the bi-level hypergradient carries the -r * lambda1 L_ssl term on top of it
    reg.lambda2 = 0.7
    reg.mode = "jvp"
    g_jvp = reg.hypergradient(model, x1, x2, 0.5, ctx)
    diff = norm([a - b for a, b in zip(g_jvp, g_off, strict=True)])
    assert diff > 0.1 * norm(g_off), (diff, norm(g_off))


def test_bilevel_term_vanishes_with_lambda1_zero():
    """With lambda1 = 0, L_ssl(omega') does not depend on xi, so exact and jvp reduce to `off`."""
    model = build("byol")
    reg = CompMod(model.feat_dim, PROJ, lambda1=0.0, mode="off").to(dtype=torch.float64)
    x1, x2 = views()
    _, ctx = real_step(model, reg, x1, x2)
    g = {}
    for mode in MODES:
        reg.mode = mode
        g[mode] = reg.hypergradient(model, x1, x2, 0.5, ctx)
    for mode in ("exact", "jvp"):
        for a, b in zip(g[mode], g["off"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


# ---- acceptance 4: look-ahead passes leave BN statistics, EMA teachers, .grad and omega alone --------
def _snapshot(model: SSLMethod, reg: CompMod) -> dict[str, torch.Tensor]:
    snap = {f"model.{n}": b.clone() for n, b in model.named_buffers()}
    snap.update({f"head.{n}": b.clone() for n, b in reg.head.named_buffers()})
    # every parameter, the frozen ones too (BYOL's EMA target)
    snap.update({f"param.{n}": p.detach().clone() for n, p in model.named_parameters()})
    snap.update({f"grad.{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    return snap


def _assert_same(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> None:
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


@pytest.mark.parametrize("name", METHODS.names())  # buffers include queues, step counters, EMA teachers
def test_hypergradient_and_meta_step_have_no_side_effects(name):
    model = build(name, torch.float32)
    reg = CompMod(model.feat_dim, PROJ, fusion="concat_h")
    x1, x2 = views(torch.float32)
    _, ctx = real_step(model, reg, x1, x2)
    before = _snapshot(model, reg)
    assert any(k.startswith("model.") and "running_mean" in k for k in before)
    if name == "byol":
        assert any(k.startswith("param.target.") for k in before)
    frozen = 1 if name == "swav" else 0  # SwAV's prototypes get no gradient while frozen (first steps)
    assert sum(k.startswith("grad.") for k in before) == len(trainable(model)) - frozen
    for mode in MODES:
        reg.mode = mode
        reg.hypergradient(model, x1, x2, 0.1, ctx)
        _assert_same(before, _snapshot(model, reg))

    xi = [p.detach().clone() for p in reg.head.parameters()]
    for mode in MODES:
        reg.mode = mode
        info = reg.meta_step(model, x1, x2, 0.1, ctx)
        assert info["hypergrad_norm"] > 0
        _assert_same(before, _snapshot(model, reg))  # .grad, omega, buffers, EMA target
    assert all(p.grad is None for p in reg.head.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(xi, reg.head.parameters(), strict=True))


def test_meta_step_changes_xi_only_along_the_hypergradient():
    """One plain-SGD meta step (momentum 0): xi_new = xi - lr * hypergradient."""
    model = build("simclr")
    reg = CompMod(model.feat_dim, PROJ, momentum=0.0, mode="jvp").to(dtype=torch.float64)
    x1, x2 = views()
    _, ctx = real_step(model, reg, x1, x2)
    g = reg.hypergradient(model, x1, x2, 0.2, ctx)
    xi = [p.detach().clone() for p in reg.head.parameters()]
    info = reg.meta_step(model, x1, x2, 0.2, ctx)
    for a, gi, p in zip(xi, g, reg.head.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), a - 0.2 * gi, rtol=0, atol=1e-15)
    assert info["hypergrad_norm"] == pytest.approx(norm(g), rel=1e-12)


# ---- acceptance 5: meta.every -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_every_k_updates_xi_on_steps_0_k_2k_only(mode):
    k, steps = 3, 7
    model = build("simclr", torch.float32)
    reg = CompMod(model.feat_dim, PROJ, every=k, mode=mode)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    changed = []
    for i in range(steps):
        x1, x2 = views(torch.float32, seed=i)
        _, ctx = real_step(model, reg, x1, x2)
        xi = [p.detach().clone() for p in reg.head.parameters()]
        info = reg.meta_step(model, x1, x2, 0.05, ctx)
        opt.step()
        assert reg.step == i + 1
        moved = any(not torch.equal(a, b) for a, b in zip(xi, reg.head.parameters(), strict=True))
        changed.append(moved)
        assert ("hypergrad_norm" in info) == (i % k == 0)
    assert changed == [i % k == 0 for i in range(steps)]


def test_every_rejects_zero():
    with pytest.raises(ValueError, match="compmod.meta.every: 0 is not accepted; expected an integer >= 1"):
        CompMod(8, 4, every=0)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"order": 3}, "compmod.order=3"),
        ({"lambda2": -1.0}, "compmod.lambda2=-1.0"),
        ({"r": 0.0}, "compmod.meta.r=0.0"),
    ],
)
def test_the_constructor_and_config_validation_give_one_message(kwargs, key):
    """Each CompMod value is checked in one place (config/compmod_checks.py): the constructor used
    without a config raises the message `compmod train --set` reports."""
    with pytest.raises(ConfigError) as from_config:
        load_config(None, [key])
    with pytest.raises(ConfigError) as from_constructor:
        CompMod(8, 4, **kwargs)
    assert str(from_constructor.value) == str(from_config.value)


# ---- acceptance 8: mixup fusion ----------------------------------------------------------------------
def test_fixed_mixup_alpha_fuses_0p3_h1_plus_0p7_h2():
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g))
    z = (torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g))
    alpha = torch.full((6, 1), 0.3)
    torch.testing.assert_close(fuse("mixup_h", h, z, alpha), 0.3 * h[0] + 0.7 * h[1])

    # through the regularizer: alpha is 0.3 on every row, and L_mcr is that of g_xi(0.3 h1 + 0.7 h2)
    reg = CompMod(5, 3, fusion="mixup_h", mixup_alpha=0.3, lambda1=2.0)
    head = copy.deepcopy(reg.head)
    out = reg.regularize(h, z)
    assert torch.equal(out.context.alpha, torch.full((6, 1), 0.3))
    lam = reg.current_lambda(6, 3)
    expected = 2.0 * mcr_loss(head(0.3 * h[0] + 0.7 * h[1]), z[0], z[1], lam)
    torch.testing.assert_close(out.loss, expected)


def test_fixed_mixup_alpha_is_exact_in_float64():
    h = (torch.ones(4, 5, dtype=torch.float64), torch.zeros(4, 5, dtype=torch.float64))
    z = (torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
    reg = CompMod(5, 3, fusion="mixup_h", mixup_alpha=0.3).to(dtype=torch.float64)
    alpha = reg.regularize(h, z).context.alpha
    assert torch.equal(alpha, torch.full((4, 1), 0.3, dtype=torch.float64))


def test_random_mixup_alpha_per_sample_in_unit_interval():
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(64, 5, generator=g), torch.randn(64, 5, generator=g))
    z = (torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g))
    reg = CompMod(5, 3, fusion="mixup_h", mixup_alpha=None)
    a1 = reg.regularize(h, z).context.alpha
    assert a1.shape == (64, 1)
    assert float(a1.min()) >= 0.0 and float(a1.max()) <= 1.0
    assert float(a1.std()) > 0.1  # differs across rows (U(0, 1): std 0.29)
    assert not torch.equal(a1, reg.regularize(h, z).context.alpha)  # fresh alpha per batch
    # seeded: a second regularizer with the same seed draws the same alphas
    again = CompMod(5, 3, fusion="mixup_h", mixup_alpha=None)
    assert torch.equal(a1, again.regularize(h, z).context.alpha)


def test_mixup_alpha_is_shared_by_real_step_and_meta_step():
    """The look-ahead uses the real step's alpha: the real step's L_mcr is reproduced by the meta
    problem, and jvp (which reads the real step's .grad) agrees with exact (which recomputes it)."""
    model = build("simclr")
    reg = CompMod(model.feat_dim, PROJ, fusion="mixup_h", mixup_alpha=None).to(dtype=torch.float64)
    x1, x2 = views()
    model.zero_grad(set_to_none=True)
    out = model(x1, x2)
    reg_out = reg.regularize(out.h, out.z)
    (out.loss + reg_out.loss).backward()

    ctx = reg_out.context
    problem = reg.problem(0.5, ctx.lam, ctx.alpha)
    xi = {n: p.detach() for n, p in trainable(reg.head).items()}
    h = tuple(t.detach() for t in out.h)
    z = tuple(t.detach() for t in out.z)
    torch.testing.assert_close(problem.mcr(problem.z_hat(xi, h, z), z), reg_out.parts["mcr"])
    fresh = reg.problem(0.5, ctx.lam, torch.rand((BATCH, 1), dtype=torch.float64))
    assert abs(float(fresh.mcr(fresh.z_hat(xi, h, z), z) - reg_out.parts["mcr"])) > 1e-6

    g = {}
    for mode in ("exact", "jvp"):
        reg.mode = mode
        g[mode] = reg.hypergradient(model, x1, x2, 0.5, ctx)
    diff = norm([a - b for a, b in zip(g["exact"], g["jvp"], strict=True)])
    assert diff <= 1e-10 * norm(g["exact"])


def test_mixup_alpha_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="compmod.mixup_alpha: 1.5 is not accepted"):
        CompMod(8, 4, fusion="mixup_h", mixup_alpha=1.5)
