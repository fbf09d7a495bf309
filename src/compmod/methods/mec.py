"""MEC (Liu et al. 2022): maximum entropy coding between an online predictor and an EMA teacher."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compmod.distributed import gather
from compmod.losses.mec import mec_lambda, mec_loss, warmed_lambda
from compmod.methods.base import Check, StepOutput, register_method, require
from compmod.methods.predictor import PredictorMethod
from compmod.methods.simsiam import SimSiamParams, simsiam_heads
from compmod.models.host_mirror import mirror, set_mirrored


@dataclass
class MECParams(SimSiamParams):
    # Official main_pretrain.py: SimSiam's heads (--dim 2048, --pred-dim 512), --teacher-momentum 0.996
    # (cosine to 1), --eps 64 (eps^2 in lam = d / (m eps^2)), Taylor order 4 (`loss_func`).
    ema_base: float = 0.996
    eps_sq: float = 64.0
    order: int = 4
    # `lamda_scheduler`: 1/lam goes linearly from 8/lam to 1/lam over the first 10 of 100 epochs; here
    # as that fraction of training (0 turns the warm-up off).
    lambda_warmup: float = 0.1

    def checks(self, batch_size: int | None = None) -> list[Check]:
        return [
            *super().checks(batch_size),
            (0.0 <= self.ema_base <= 1.0, "ema_base", self.ema_base, "a number in [0, 1]"),
            (self.eps_sq > 0, "eps_sq", self.eps_sq, "a number > 0"),
            (isinstance(self.order, int) and self.order >= 1, "order", self.order, "an integer >= 1"),
            (0.0 <= self.lambda_warmup <= 1.0, "lambda_warmup", self.lambda_warmup, "a number in [0, 1]"),
        ]


class MEC(PredictorMethod):
    """Online f, g, q; teacher = EMA of (f, g) (official builder.py). loss = `mec_loss` of the predictions
    q(g(f(x))) against the other view's teacher output, on the global batch, with lam = d / (m eps^2) warmed
    up from lam / 8. The `progress` buffer (set after each step) drives the warm-up, so forward depends
    only on parameters, buffers and inputs."""

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        projector: nn.Module,
        predictor: nn.Module,
        ema_base: float = 0.996,
        eps_sq: float = 64.0,
        order: int = 4,
        lambda_warmup: float = 0.1,
    ) -> None:
        super().__init__(backbone, feat_dim, projector, predictor, ema_base)
        self.eps_sq, self.order, self.lambda_warmup = eps_sq, order, lambda_warmup
        self.register_buffer("progress", torch.zeros(()))
        mirror(self, "progress")

    def lam(self, m: int, d: int) -> float:
        """lam = d / (m eps^2) at the current progress: lam / 8 at the start, lam after the warm-up."""
        done = 1.0 if self.lambda_warmup <= 0 else self.host["progress"] / self.lambda_warmup
        return warmed_lambda(mec_lambda(m, d, self.eps_sq), done)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        (h1, h2), (z1, z2) = self.encode_views(x1, x2)
        p1, p2 = gather(self.predictor(z1)), gather(self.predictor(z2))
        assert self.target is not None
        t1, t2 = gather(self.target(x1).detach()), gather(self.target(x2).detach())
        loss = mec_loss(p1, p2, t1, t2, self.lam(*p1.shape), self.order)
        return StepOutput(loss, {"ssl": loss.detach()}, (h1, h2), (z1, z2))

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """Teacher EMA with the cosine momentum schedule (official `cosine_scheduler(0.996, 1, ...)`)."""
        super().after_optimizer_step(progress)
        set_mirrored(self, "progress", progress)


@register_method("mec", MECParams, "byol")
def build_mec(backbone: nn.Module, feat_dim: int, params: MECParams) -> MEC:
    require(params.checks())
    head, predictor = simsiam_heads(feat_dim, params)
    return MEC(
        backbone,
        feat_dim,
        head,
        predictor,
        params.ema_base,
        params.eps_sq,
        params.order,
        params.lambda_warmup,
    )
