"""SimSiam (Chen & He 2021): a predictor on one view regresses the other view's projection, stop-gradient."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compmod.distributed import gather
from compmod.errors import ConfigError
from compmod.losses.simsiam import simsiam_loss
from compmod.methods.base import ProjectorParams, StepOutput, register_method
from compmod.methods.predictor import PredictorMethod
from compmod.models import byol_predictor, mlp


@dataclass
class SimSiamParams(ProjectorParams):
    # FAIR simsiam builder.py: `dim=2048` output, `pred_dim=512` predictor bottleneck (paper Sec. 4.4).
    proj_dim: int = 2048
    pred_hidden_dim: int = 512


def simsiam_heads(feat_dim: int, params: SimSiamParams) -> tuple[nn.Sequential, nn.Sequential]:
    """(projector, predictor) as FAIR simsiam builder.py: the projector's output Linear is followed by
    BatchNorm1d(affine=False) (paper Sec. 3: "BN applied to each fc layer, including its output fc"); the
    predictor is Linear-BN-ReLU-Linear with a `pred_hidden_dim` bottleneck."""
    if params.pred_hidden_dim < 1:
        raise ConfigError(
            f"config key method.pred_hidden_dim: {params.pred_hidden_dim!r} is not accepted; "
            "expected an integer >= 1"
        )
    head = mlp(
        feat_dim,
        params.proj_hidden_dim,
        params.proj_dim,
        params.proj_layers,
        last_bn=True,
        last_bn_affine=False,
    )
    return head, byol_predictor(params.proj_dim, params.pred_hidden_dim)


class SimSiam(PredictorMethod):
    """Shared f, g, predictor q. loss = D(q(z1), sg(z2)) / 2 + D(q(z2), sg(z1)) / 2 (Eq. 2), D =
    `simsiam_loss`; in [-1, 1]. No momentum encoder: the stop-gradient is the whole trick."""

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        (h1, h2), (z1, z2) = self.encode_views(x1, x2)
        # gathered, as BYOL: every rank computes the global batch's loss (one process's value; DDP's
        # gradient average is then the single-process gradient)
        p1, p2, t1, t2 = (
            gather(t) for t in (self.predictor(z1), self.predictor(z2), z1.detach(), z2.detach())
        )
        loss = (simsiam_loss(p1, t2) + simsiam_loss(p2, t1)) / 2
        return StepOutput(loss, {"ssl": loss.detach()}, (h1, h2), (z1, z2))


@register_method("simsiam", SimSiamParams, "simclr")
def build_simsiam(backbone: nn.Module, feat_dim: int, params: SimSiamParams) -> SimSiam:
    return SimSiam(backbone, feat_dim, *simsiam_heads(feat_dim, params))
