"""The xi-hypergradient of CompMod (Algorithm 1, Eq. 9) against finite differences of F, in float64.

F(xi) = L_ssl(omega'(xi)) + lambda2 * L_comp(z_hat(xi)),  omega'(xi) = omega - r * grad_omega [L_ssl +
lambda1 * L_mcr(omega, xi)], evaluated by `compmod.meta.objective` (no side effects). Both `exact`
(double backward) and `jvp` (forward mode) must match its central differences, for every method and
fusion, with the fused input detached or not, on the small CNN with its BatchNorm layers.

Why the activations are swapped: with ReLU, F(xi) is only piecewise smooth (omega' moves the
pre-activations of the look-ahead forward across the ReLU kinks as xi changes), so a finite difference
may straddle a kink and measure a one-sided slope: measured on this setup, FD at eps 1e-4..1e-6 jumped
around while 1e-7/1e-8 agreed with the analytic value to 1e-9. FD of a ReLU network is ill-posed there,
so for the FD comparison every `nn.ReLU` (backbone, projector, BYOL predictor and target, CompMod head)
is replaced by `nn.SiLU` (smooth everywhere); BatchNorm stays. `exact` and `jvp` compute the same
number by different routes, so they are compared with each other on the unmodified ReLU networks too.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from tests.helpers import method_overrides
from torch import nn

from compmod.config import load_config
from compmod.engine.builders import build_method
from compmod.losses import comp_loss
from compmod.meta import BilevelProblem, objective
from compmod.meta.functional import trainable
from compmod.methods import SSLMethod
from compmod.regularizers import FUSIONS, CompMod, MetaContext, fuse

BATCH, SIZE, HIDDEN, PROJ = 8, 12, 32, 16
R = 0.5  # look-ahead step r
# lambda2 balances the two parts of the hypergradient: with lambda2 = 1 the L_comp part is only
# 0.1-1 % of the bi-level (L_ssl) part here, and an error in it would hide below the FD tolerance;
# with 30 it is 7-44 % of the total (measured), and each part is checked to ~1e-4 of itself or better.
LAMBDA2 = 30.0
METHOD_NAMES = ("simclr", "byol", "barlow_twins")
FD_RTOL = 1e-5


def smooth_activations(module: nn.Module) -> None:
    """Replace every nn.ReLU below `module` by nn.SiLU, in place (parameters untouched)."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.SiLU())
        else:
            smooth_activations(child)


def build(name: str) -> SSLMethod:
    overrides = [*method_overrides(name), f"method.proj_hidden_dim={HIDDEN}", f"method.proj_dim={PROJ}"]
    torch.manual_seed(0)
    return build_method(load_config(None, overrides), 1, SIZE).double()


def real_step(model: SSLMethod, reg: CompMod, x1: torch.Tensor, x2: torch.Tensor) -> MetaContext:
    """Step 1 of Algorithm 1 up to backward: the model's .grad = grad_omega [L_ssl + lambda1 L_mcr];
    returns the context of the batch's meta step."""
    model.zero_grad(set_to_none=True)
    out = model(x1, x2)
    r = reg.regularize(out.h, out.z)
    (out.loss + r.loss).backward()
    return r.context


def batch_problem(reg: CompMod, ctx: MetaContext, r: float) -> BilevelProblem:
    """The bi-level problem of the batch of `ctx` (its lam and its mixup alpha)."""
    return reg.problem(r, ctx.lam, ctx.alpha)


def hypergrads(reg: CompMod, model: SSLMethod, x1, x2, ctx: MetaContext) -> dict[str, list[torch.Tensor]]:
    out = {}
    for mode in ("exact", "jvp"):
        reg.mode = mode
        out[mode] = reg.hypergradient(model, x1, x2, R, ctx)
    return out


def norm(gs: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((g**2).sum() for g in gs)))


def rel_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return norm([x - y for x, y in zip(a, b, strict=True)]) / norm(a)


def richardson_fd(f, eps: float) -> float:
    """Central difference at eps and eps/2, Richardson-extrapolated: error O(eps^4)."""

    def central(e: float) -> float:
        return float((f(e) - f(-e)) / (2 * e))

    d1, d2 = central(eps), central(eps / 2)
    return (4 * d2 - d1) / 3


def setup(name: str, fusion: str, detach_input: bool, **kw):
    model = build(name)
    reg = CompMod(
        model.feat_dim, PROJ, fusion=fusion, detach_input=detach_input, lambda2=LAMBDA2, r=R, **kw
    ).to(dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(BATCH, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    x2 = torch.randn(BATCH, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    return model, reg, x1, x2


@pytest.mark.parametrize("detach_input", [False, True], ids=["attached", "detached"])
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_exact_and_jvp_match_finite_differences_of_F(name, fusion, detach_input):
    model, reg, x1, x2 = setup(name, fusion, detach_input)

    # 1) ReLU networks as built: exact and jvp are the same number by two routes.
    ctx = real_step(model, reg, x1, x2)
    g = hypergrads(reg, model, x1, x2, ctx)
    assert norm(g["exact"]) > 0
    assert rel_diff(g["exact"], g["jvp"]) <= 1e-12

    # 2) Smooth networks (see the module docstring): both against central differences of F.
    smooth_activations(model)
    smooth_activations(reg.head)
    ctx = real_step(model, reg, x1, x2)
    g = hypergrads(reg, model, x1, x2, ctx)
    assert rel_diff(g["exact"], g["jvp"]) <= 1e-12
    problem = batch_problem(reg, ctx, R)
    xi = {n: p.detach() for n, p in trainable(reg.head).items()}
    # both parts of the hypergradient carry weight, so FD sees an error in either
    reg.mode = "off"
    g_comp = reg.hypergradient(model, x1, x2, R, ctx)
    share = norm(g_comp) / norm(g["exact"])
    assert 0.01 < share < 0.99, share

    assert_matches_fd(problem, model, x1, x2, xi, g, seed=2)


def assert_matches_fd(problem, model, x1, x2, xi, grads: dict[str, list[torch.Tensor]], seed: int) -> None:
    """Each mode's hypergradient, projected on 2 random directions u, against Richardson central
    differences of F(xi + e u) (`objective`), to FD_RTOL relative."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(2):
        u = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) for n, p in xi.items()}

        def f(e: float, u=u) -> torch.Tensor:
            return objective(problem, model, x1, x2, {n: p + e * u[n] for n, p in xi.items()})

        fd = richardson_fd(f, 1e-6)
        for mode, g in grads.items():
            analytic = float(sum((gi * u[n]).sum() for gi, n in zip(g, xi, strict=True)))
            assert abs(fd - analytic) <= FD_RTOL * abs(analytic), (mode, fd, analytic)


def test_per_coordinate_finite_differences():
    """d F / d xi_j for the largest-gradient entry of every head tensor (weights, BN scale and shift)."""
    model, reg, x1, x2 = setup("simclr", "concat_h", False)
    smooth_activations(model)
    smooth_activations(reg.head)
    ctx = real_step(model, reg, x1, x2)
    g = hypergrads(reg, model, x1, x2, ctx)
    problem = batch_problem(reg, ctx, R)
    xi = {n: p.detach() for n, p in trainable(reg.head).items()}
    assert len(xi) == 5  # Linear, BN weight, BN bias, Linear, Linear bias
    for (n, p), ge, gj in zip(xi.items(), g["exact"], g["jvp"], strict=True):
        j = int(ge.abs().argmax())
        e_j = torch.zeros_like(p).view(-1)
        e_j[j] = 1.0
        e_j = e_j.view_as(p)

        def f(e: float, n=n, e_j=e_j) -> torch.Tensor:
            return objective(problem, model, x1, x2, {**xi, n: xi[n] + e * e_j})

        fd = richardson_fd(f, 1e-5)
        for analytic in (float(ge.view(-1)[j]), float(gj.view(-1)[j])):
            assert abs(fd - analytic) <= FD_RTOL * abs(analytic), (n, j, fd, analytic)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_objective_is_the_one_step_look_ahead(name):
    """`objective` against F written out by hand: an SGD step of size r on a deep copy of the model."""
    model, reg, x1, x2 = setup(name, "concat_h", False, lambda1=2.0)
    ctx = real_step(model, reg, x1, x2)
    problem = batch_problem(reg, ctx, R)
    xi = {n: p.detach() for n, p in trainable(reg.head).items()}
    head = copy.deepcopy(reg.head)  # same parameters; its own BN statistics
    moved = copy.deepcopy(model)
    with torch.no_grad():
        out = model(x1, x2)  # batch statistics: running stats do not matter in train mode
        z_hat = head(fuse("concat_h", out.h, out.z))
        for p, q in zip(trainable(moved).values(), trainable(model).values(), strict=True):
            p -= R * q.grad
        expected = moved(x1, x2).loss + LAMBDA2 * comp_loss(z_hat, problem.lam)
    got = objective(problem, model, x1, x2, xi)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    # without L_comp, F still depends on xi: through the look-ahead omega'(xi)
    ssl_only = dataclasses.replace(problem, lambda2=0.0)
    other = {n: p * 1.1 for n, p in xi.items()}
    assert (
        abs(float(objective(ssl_only, model, x1, x2, other) - objective(ssl_only, model, x1, x2, xi))) > 1e-6
    )
