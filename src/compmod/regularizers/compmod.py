"""CompMod: the comprehensive head g_xi, L_mcr in the real step, and the bi-level update of xi.

A plug-in for any training loop whose model returns a `StepOutput` (or `(loss, (h1, h2), (z1, z2))`):

    reg = CompMod(feat_dim=512, emb_dim=128)
    out = model(x1, x2)
    r = reg.regularize(out.h, out.z)                          # lambda1 * L_mcr, xi held fixed
    loss = out.loss + r.loss
    optimizer.zero_grad(); loss.backward()
    reg.meta_step(model, x1, x2, lr, r.context)               # xi <- xi - lr_xi * hypergradient
    optimizer.step()

`meta_step` must run after `backward()` and before `optimizer.step()`: the `jvp` mode reads the real
step's gradient from `.grad` at the current parameters. The look-ahead re-runs `model(x1, x2)`
statelessly, so the model's forward must be a deterministic function of its parameters and inputs (no
augmentation or dropout inside it); omega is every parameter of `model` that requires grad. CompMod is
not an `nn.Module`: move it with `.to(device)` and checkpoint `reg.state_dict()` beside the model's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compmod.config.compmod_checks import compmod_checks, require_compmod
from compmod.distributed import average_, local_rows, world_size
from compmod.losses.mec import SCALES, lambda_at, mec_lambda
from compmod.meta.functional import trainable
from compmod.meta.fusion import FUSIONS, fusion_dims
from compmod.meta.hypergrad import MODES, BilevelProblem, hypergrad_exact, hypergrad_jvp, hypergrad_off
from compmod.meta.lookahead import TentativeStep
from compmod.models.heads import mlp


class CompModHead(nn.Module):
    """g_xi: fused input -> hidden -> d (Linear-BN-ReLU-Linear); sizes from `fusion_dims`."""

    def __init__(self, fusion: str, feat_dim: int, emb_dim: int) -> None:
        super().__init__()
        in_dim, hidden = fusion_dims(fusion, feat_dim, emb_dim)
        self.net = mlp(in_dim, hidden, emb_dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class MetaContext:
    """What the meta step takes from the real step's forward: the batch's h and z (detached), the mixup
    weights alpha it drew (None unless fusion mixup_h) and the MEC lambda it used."""

    h: tuple[torch.Tensor, torch.Tensor]
    z: tuple[torch.Tensor, torch.Tensor]
    alpha: torch.Tensor | None
    lam: float


@dataclass
class RegOutput:
    """loss: lambda1 * L_mcr, to add to the method's loss. parts: detached values to log. context: what
    `meta_step` / `hypergradient` take for this batch."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor | float]
    context: MetaContext


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


class CompMod:
    """Meta Comprehensive Regularization around any SSL model (Algorithm 1 of the CompMod paper).

    Args:
        feat_dim: d', backbone feature size. emb_dim: d, projection size.
        fusion: concat_h (Eq. 5) | concat_z (Eq. 12) | mixup_h (Eq. 11; alpha ~ U(0, 1) per sample, or
            `mixup_alpha` fixed).
        lambda1: weight of L_mcr in the real step. lambda2: weight of L_comp in the meta step.
        order: Taylor order of the log-det series (even; 4 by default). eps_sq: MEC's eps^2, giving
            lam = d / (m * eps_sq). lambda_warmup_steps: lam warms up from lam/8 (MEC's schedule).
        scale: mec (default: -T/(lam*m)) | paper (-(m+d)/2 * T).
        detach_input: detach the fused input (h, or z for concat_z) on its way into g_xi in the real step.
        mode: jvp (exact hypergradient by forward mode, default) | exact (double backward) | off (xi
            trained by lambda2 * L_comp only: the paper's "No bi-level" row).
        r: look-ahead step; None uses the `lr` passed to `meta_step`. every: update xi every K steps.
        optimizer, lr, momentum: xi's optimiser (sgd | adam); lr None uses the `lr` of `meta_step`.
    """

    def __init__(
        self,
        feat_dim: int,
        emb_dim: int,
        *,
        fusion: str = "concat_h",
        mixup_alpha: float | None = None,
        lambda1: float = 1.0,
        lambda2: float = 1.0,
        order: int = 4,
        eps_sq: float = 64.0,
        lambda_warmup_steps: int = 0,
        scale: str = "mec",
        detach_input: bool = False,
        mode: str = "jvp",
        r: float | None = None,
        every: int = 1,
        optimizer: str = "sgd",
        lr: float | None = None,
        momentum: float = 0.9,
        seed: int = 0,
    ) -> None:
        _check_choice("fusion", fusion, FUSIONS)
        _check_choice("scale", scale, SCALES)
        _check_choice("mode", mode, MODES)
        _check_choice("optimizer", optimizer, ("sgd", "adam"))
        require_compmod(
            compmod_checks(
                lambda1=lambda1, lambda2=lambda2, order=order, eps_sq=eps_sq,
                lambda_warmup=lambda_warmup_steps, mixup_alpha=mixup_alpha, every=every, r=r, lr=lr,
                momentum=momentum,
            )
        )  # fmt: skip
        self.fusion, self.mixup_alpha, self.scale, self.mode = fusion, mixup_alpha, scale, mode
        self.lambda1, self.lambda2, self.order, self.eps_sq = lambda1, lambda2, order, eps_sq
        self.lambda_warmup_steps, self.detach_input = lambda_warmup_steps, detach_input
        self.r, self.every, self.lr = r, every, lr
        self.head = CompModHead(fusion, feat_dim, emb_dim)
        params = list(self.head.parameters())
        self.optimizer: torch.optim.Optimizer = (
            torch.optim.SGD(params, lr=lr or 0.0, momentum=momentum)
            if optimizer == "sgd"
            else torch.optim.Adam(params, lr=lr or 1e-3)
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> CompMod:
        self.head.to(device=device, dtype=dtype)
        return self

    def train(self, mode: bool = True) -> CompMod:
        self.head.train(mode)
        return self

    def current_lambda(self, m: int, d: int) -> float:
        return lambda_at(self.step, self.lambda_warmup_steps, mec_lambda(m, d, self.eps_sq))

    def regularize(
        self, h: tuple[torch.Tensor, torch.Tensor], z: tuple[torch.Tensor, torch.Tensor]
    ) -> RegOutput:
        """lambda1 * L_mcr(z_hat, z1, z2) with xi held fixed; gradients reach omega through z (and h,
        unless `detach_input`)."""
        m_local, d = z[0].shape
        m = m_local * world_size()  # the global batch: every rank computes the global losses
        lam = self.current_lambda(m, d)
        alpha = None
        if self.fusion == "mixup_h":
            alpha = (
                torch.full((m, 1), self.mixup_alpha, dtype=h[0].dtype)
                if self.mixup_alpha is not None
                else torch.rand((m, 1), generator=self.generator, dtype=h[0].dtype)
            )[local_rows(m)].to(h[0].device)  # drawn for the global batch: this rank's rows
        problem = self.problem(0.0, lam, alpha)
        xi = {n: p.detach() for n, p in trainable(self.head).items()}
        z_hat = problem.z_hat(xi, h, z, real_buffers=True)
        mcr = problem.mcr(z_hat, z)
        with torch.no_grad():
            comp = problem.comp(z_hat)
        detached = (tuple(t.detach() for t in h), tuple(t.detach() for t in z))
        context = MetaContext(detached[0], detached[1], alpha, lam)  # type: ignore[arg-type]
        return RegOutput(self.lambda1 * mcr, {"mcr": mcr.detach(), "comp": comp, "lambda": lam}, context)

    def problem(self, r: float, lam: float, alpha: torch.Tensor | None = None) -> BilevelProblem:
        return BilevelProblem(
            self.head,
            self.fusion,
            alpha,
            self.detach_input,
            lam,
            self.order,
            self.scale,
            self.lambda1,
            self.lambda2,
            r,
        )

    def hypergradient(
        self,
        model: nn.Module,
        x1: torch.Tensor,
        x2: torch.Tensor,
        lr: float,
        context: MetaContext,
        tentative: TentativeStep | None = None,
    ) -> list[torch.Tensor]:
        """The xi-gradient of F for the batch whose `regularize` gave `context` (in `self.mode`); under data
        parallelism the global batch's, the same on every rank. The look-ahead is `tentative` (the real
        optimiser's step, `meta/lookahead.py`) applied to the real step's `.grad`, or with `tentative` None
        (or `r` set) Eq. 9's omega - r g with r = `r` or `lr`."""
        grads = self._rank_share(model, x1, x2, lr, context, tentative)
        average_(grads)  # each rank computed its share (meta/hypergrad.py); identity in one process
        return grads

    def _rank_share(
        self,
        model: nn.Module,
        x1: torch.Tensor,
        x2: torch.Tensor,
        lr: float,
        c: MetaContext,
        tentative: TentativeStep | None,
    ) -> list[torch.Tensor]:
        problem = self.problem(self.r if self.r is not None else lr, c.lam, c.alpha)
        if self.mode == "off":
            return hypergrad_off(problem, c.h, c.z)
        omega = list(trainable(model).values())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in omega]
        if tentative is not None and self.r is None:
            problem.lookahead = tentative(omega, grads)
        if self.mode == "exact":
            return hypergrad_exact(problem, model, x1, x2)
        return hypergrad_jvp(problem, model, x1, x2, grads)

    def meta_step(
        self,
        model: nn.Module,
        x1: torch.Tensor,
        x2: torch.Tensor,
        lr: float,
        context: MetaContext,
        tentative: TentativeStep | None = None,
    ) -> dict[str, torch.Tensor]:
        """Update xi (every `every` steps) for the batch whose `regularize` gave `context`. Call after
        backward() and before the main optimizer.step(); `tentative`: see `hypergradient`. Returns the
        hypergradient's norm as a 0-d tensor (on the device: reading it waits for the device; the Trainer
        reads it every `train.log_every` steps)."""
        run = self.step % self.every == 0
        self.step += 1
        if not run:
            return {}
        grads = self.hypergradient(model, x1, x2, lr, context, tentative)
        for p, g in zip(self.head.parameters(), grads, strict=True):
            p.grad = g
        if self.lr is None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        return {"hypergrad_norm": norm.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.generator.set_state(state["generator"])
