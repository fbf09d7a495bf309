"""CompMod's look-ahead as the real optimiser's next step (Eq. 9's "update of Eq. 8"), in float64:

* `tentative_step(optimizer)` gives the parameters the optimiser's next `step()` will produce, for SGD
  (momentum, weight decay), LARS (both rules, clipping) and AdamW, and leaves the optimiser's state as it was;
* with that look-ahead, `exact` and `jvp` hypergradients agree to 1e-10 and match central finite
  differences of F with the step sizes held constant (`objective` with `problem.lookahead`).
"""

from __future__ import annotations

import copy

import pytest
import torch
from tests.meta.test_hypergrad_fd import (
    BATCH,
    LAMBDA2,
    PROJ,
    SIZE,
    assert_matches_fd,
    batch_problem,
    build,
    norm,
    real_step,
    rel_diff,
    smooth_activations,
)

from compmod.engine.optim import LARS, param_groups, tentative_step
from compmod.meta.functional import trainable
from compmod.regularizers import CompMod

OPTIMISERS = ("sgd", "lars_fair", "lars_solo", "adamw")


def make_optimizer(kind: str, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    groups = param_groups([model], weight_decay=0.05)
    if kind == "lars_fair":
        return LARS(groups, lr=lr, momentum=0.9, eta=0.02, rule="fair")
    if kind == "lars_solo":
        return LARS(groups, lr=lr, momentum=0.9, eta=0.02, rule="solo", clip_lr=True)
    for g in groups:
        g.pop("lars_exclude")
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(BATCH, 1, SIZE, SIZE, generator=g, dtype=torch.float64) for _ in range(2))


def state_copy(opt: torch.optim.Optimizer) -> list:
    return [copy.deepcopy(opt.state.get(p, {})) for g in opt.param_groups for p in g["params"]]


@pytest.mark.parametrize("kind", OPTIMISERS)
def test_the_look_ahead_is_the_optimisers_next_step_and_writes_no_state(kind):
    model = build("simclr")
    lr = 4.0 if kind == "lars_solo" else 0.05  # solo: clipping binds for some layers at a large lr
    opt = make_optimizer(kind, model, lr)
    for seed in (10, 11):  # momentum / Adam moments populated
        opt.zero_grad()
        model(*batch(seed)).loss.backward()
        opt.step()
    opt.zero_grad()
    model(*batch(12)).loss.backward()
    omega = trainable(model)
    grads = [p.grad.clone() for p in omega.values()]
    before = state_copy(opt)
    look = tentative_step(opt)(list(omega.values()), grads)
    expected = look.point({n: p.detach().clone() for n, p in omega.items()}, grads)
    after = state_copy(opt)
    for a, b in zip(before, after, strict=True):
        assert a.keys() == b.keys() and all(
            torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a
        )
    opt.step()
    for n, p in omega.items():  # the same arithmetic in another order: float64 rounding only
        torch.testing.assert_close(p.detach(), expected[n], rtol=1e-12, atol=1e-14)
    if kind == "lars_solo":
        scales = [float(s) for s in look.scale]
        assert min(scales) < lr and max(scales) == pytest.approx(lr)  # clipped layers step at lr exactly


@pytest.mark.parametrize("kind", ["sgd", "lars_fair", "lars_solo"])
def test_hypergradient_through_the_optimisers_step_matches_finite_differences(kind):
    model = build("simclr")
    smooth_activations(model)  # F is smooth (see test_hypergrad_fd's docstring)
    reg = CompMod(model.feat_dim, PROJ, lambda2=LAMBDA2).to(dtype=torch.float64)
    smooth_activations(reg.head)
    lr = 0.8
    opt = make_optimizer(kind, model, lr)
    for seed in (20, 21):  # a real momentum buffer: the look-ahead's shift is not zero
        x1, x2 = batch(seed)
        real_step(model, reg, x1, x2)
        opt.step()
    x1, x2 = batch(22)
    ctx = real_step(model, reg, x1, x2)
    step = tentative_step(opt)
    got = {}
    for mode in ("exact", "jvp"):
        reg.mode = mode
        got[mode] = reg.hypergradient(model, x1, x2, lr, ctx, step)
    assert norm(got["exact"]) > 0
    assert rel_diff(got["exact"], got["jvp"]) <= 1e-10
    plain = {}
    for mode in ("exact",):
        reg.mode = mode
        plain[mode] = reg.hypergradient(model, x1, x2, lr, ctx)  # Eq. 9's omega - lr g: another number
    assert rel_diff(got["exact"], plain["exact"]) > 1e-3

    problem = batch_problem(reg, ctx, lr)
    omega = list(trainable(model).values())
    problem.lookahead = step(omega, [p.grad for p in omega])  # step sizes of the real gradient, fixed
    xi = {n: p.detach() for n, p in trainable(reg.head).items()}
    assert_matches_fd(problem, model, x1, x2, xi, got, seed=3)
