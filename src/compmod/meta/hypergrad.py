"""The xi-hypergradient of Algorithm 1 (CompMod paper), three ways.

Bi-level objective, omega = (theta, phi) the encoder and projector, xi the CompMod head g_xi:

    omega'(xi) = omega - shift - scale * grad_omega [L_ssl(omega) + lambda1 * L_mcr(omega, xi)]   (Eq. 9)
    F(xi)      = L_ssl(omega'(xi)) + lambda2 * L_comp(z_hat(omega, xi))                            (Eq. 9)

where shift and scale (per parameter, held constant in xi) make omega' the real optimiser's tentative
update (`meta/lookahead.py`: momentum, weight decay, LARS trust ratios); Eq. 9 as written is shift = 0,
scale = r.

- `exact`: F differentiated through the look-ahead with a double backward (MetAug-style reference).
- `jvp`: the same number. As L_ssl does not depend on xi,
      grad_xi L_ssl(omega') = -lambda1 * grad_xi < grad_omega L_mcr(omega, xi), scale * v >,
      with v = grad_omega L_ssl(omega'),
  and <grad_omega L_mcr, v> is a directional derivative: one forward-mode JVP through the network gives
  the tangents of h and z along v; the xi-gradient then needs a double backward through g_xi and the
  loss only. grad_omega [L_ssl + lambda1 L_mcr] at omega is the real step's gradient, read from `.grad`.
- `off`: the paper's "No bi-level" ablation: xi is trained by lambda2 * L_comp alone.
Every look-ahead pass runs on cloned buffers: BatchNorm statistics and EMA teachers are never changed.

Data parallel (`compmod.distributed`): h and z hold this rank's rows; the fused input is gathered, so g_xi
and both losses see the global batch on every rank, exactly as one process would. Gradients taken by hand
with `torch.autograd.grad` bypass DDP's reducer; each is the rank's share of d(sum over ranks of the
loss), so they are averaged over ranks: differentiably for the exact mode's inner gradient, in place for
v and for the returned xi-gradient (`CompMod.hypergradient`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import jvp

from compmod.distributed import all_reduce_sum, average_, gather, world_size
from compmod.losses.mec import comp_loss, mcr_loss
from compmod.meta.attention import math_attention
from compmod.meta.batchnorm_jvp import lean_batchnorm_jvp
from compmod.meta.functional import head_call, stateless_forward, trainable, zeros_for_none
from compmod.meta.fusion import fuse
from compmod.meta.lookahead import Lookahead

MODES = ("jvp", "exact", "off")


@dataclass
class BilevelProblem:
    """Everything the hypergradient needs besides the network and the batch."""

    head: nn.Module
    fusion: str
    alpha: torch.Tensor | None
    detach_input: bool  # fused input detached on its way into g_xi in the real step
    lam: float
    order: int
    scale: str
    lambda1: float
    lambda2: float
    r: float  # Eq. 9's look-ahead step, used when `lookahead` is None
    lookahead: Lookahead | None = None  # the optimiser's tentative step (shift, scale per parameter)

    def step(self, count: int) -> Lookahead:
        """The look-ahead for `count` parameters: `lookahead`, or Eq. 9's w - r g."""
        return self.lookahead if self.lookahead is not None else Lookahead.plain(self.r, count)

    def z_hat(self, xi: Mapping[str, torch.Tensor], h, z, real_buffers: bool = False) -> torch.Tensor:
        x = fuse(self.fusion, h, z, self.alpha)
        return head_call(self.head, xi, gather(x.detach() if self.detach_input else x), real_buffers)

    def mcr(self, z_hat: torch.Tensor, z) -> torch.Tensor:
        """L_mcr of the global z_hat against this rank's z (gathered into the global batch)."""
        return mcr_loss(z_hat, gather(z[0]), gather(z[1]), self.lam, self.order, self.scale)  # type: ignore[arg-type]

    def comp(self, z_hat: torch.Tensor) -> torch.Tensor:
        return comp_loss(z_hat, self.lam, self.order, self.scale)  # type: ignore[arg-type]


def _xi(problem: BilevelProblem) -> dict[str, torch.Tensor]:
    return {n: p.detach().requires_grad_() for n, p in trainable(problem.head).items()}


def hypergrad_off(problem: BilevelProblem, h, z) -> list[torch.Tensor]:
    """lambda2 * grad_xi L_comp(z_hat) at the real step's (detached) h and z."""
    xi = _xi(problem)
    h, z = tuple(t.detach() for t in h), tuple(t.detach() for t in z)
    loss = problem.lambda2 * problem.comp(problem.z_hat(xi, h, z))
    return zeros_for_none(torch.autograd.grad(loss, list(xi.values()), allow_unused=True), list(xi.values()))


def hypergrad_exact(
    problem: BilevelProblem, model: nn.Module, x1: torch.Tensor, x2: torch.Tensor
) -> list[torch.Tensor]:
    """Reference: double backward through the whole look-ahead (about 2x a plain step's memory)."""
    with math_attention():
        return _hypergrad_exact(problem, model, x1, x2)


def _hypergrad_exact(
    problem: BilevelProblem, model: nn.Module, x1: torch.Tensor, x2: torch.Tensor
) -> list[torch.Tensor]:
    xi = _xi(problem)
    omega = {n: p.detach().requires_grad_() for n, p in trainable(model).items()}
    loss, h1, h2, z1, z2 = stateless_forward(model, omega, x1, x2)
    z_hat = problem.z_hat(xi, (h1, h2), (z1, z2))
    inner = loss + problem.lambda1 * problem.mcr(z_hat, (z1, z2))
    grads = torch.autograd.grad(inner, list(omega.values()), create_graph=True, allow_unused=True)
    grads = [_mean_over_ranks(g) for g in zeros_for_none(grads, list(omega.values()))]
    omega_prime = problem.step(len(omega)).point(omega, grads)
    outer = stateless_forward(model, omega_prime, x1, x2)[0] + problem.lambda2 * problem.comp(z_hat)
    return zeros_for_none(torch.autograd.grad(outer, list(xi.values()), allow_unused=True), list(xi.values()))


def hypergrad_jvp(
    problem: BilevelProblem,
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    step_grads: list[torch.Tensor],
) -> list[torch.Tensor]:
    """Forward-mode hypergradient. `step_grads`: grad_omega [L_ssl + lambda1 L_mcr] at omega, in the
    order of `trainable(model)` (the real step's `.grad`)."""
    omega = {n: p.detach() for n, p in trainable(model).items()}
    step = problem.step(len(omega))
    # v = grad_omega L_ssl at the look-ahead point omega' = omega - shift - scale * g
    omega_prime = {n: p.detach().requires_grad_() for n, p in step.point(omega, step_grads).items()}
    loss_prime = stateless_forward(model, omega_prime, x1, x2)[0]
    v = zeros_for_none(
        torch.autograd.grad(loss_prime, list(omega_prime.values()), allow_unused=True),
        list(omega_prime.values()),
    )
    average_(v)

    # tangents of (h, z) at omega along scale * v (the direction omega' moves in when g moves along v)
    def hz(params):
        return stateless_forward(model, params, x1, x2)[1:]

    with warnings.catch_warnings(), lean_batchnorm_jvp(), math_attention():  # BN's tangent in 4 passes
        # torch's own forward-mode decompositions call torch.jit.script
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        primals, tangents = jvp(hz, (omega,), (dict(zip(omega, step.scaled(v), strict=True)),))
    leaves = [t.detach().requires_grad_() for t in primals]
    h, z = (leaves[0], leaves[1]), (leaves[2], leaves[3])
    xi = _xi(problem)
    z_hat = problem.z_hat(xi, h, z)
    d_mcr = torch.autograd.grad(problem.mcr(z_hat, z), leaves, create_graph=True, allow_unused=True)
    directional = sum((g * t).sum() for g, t in zip(d_mcr, tangents, strict=True) if g is not None)
    outer = -problem.lambda1 * directional + problem.lambda2 * problem.comp(z_hat)
    return zeros_for_none(torch.autograd.grad(outer, list(xi.values()), allow_unused=True), list(xi.values()))


def _mean_over_ranks(g: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a per-rank gradient, differentiable (g itself in one process)."""
    w = world_size()
    return g if w == 1 else all_reduce_sum(g) / w


def objective(
    problem: BilevelProblem,
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    xi: Mapping[str, torch.Tensor],
) -> torch.Tensor:
    """F(xi) = L_ssl(omega'(xi)) + lambda2 L_comp(z_hat(xi)), evaluated without side effects (for tests
    and finite differences)."""
    omega = {n: p.detach().requires_grad_() for n, p in trainable(model).items()}
    loss, h1, h2, z1, z2 = stateless_forward(model, omega, x1, x2)
    z_hat = problem.z_hat(xi, (h1, h2), (z1, z2))
    inner = loss + problem.lambda1 * problem.mcr(z_hat, (z1, z2))
    grads = zeros_for_none(
        torch.autograd.grad(inner, list(omega.values()), allow_unused=True), list(omega.values())
    )
    average_(grads)
    omega_prime = {n: p.detach() for n, p in problem.step(len(omega)).point(omega, grads).items()}
    with torch.no_grad():
        return stateless_forward(model, omega_prime, x1, x2)[0] + problem.lambda2 * problem.comp(
            z_hat.detach()
        )
