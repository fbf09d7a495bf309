"""BYOL (Grill et al. 2020): an online network predicts an EMA target's projection of the other view."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compmod.distributed import gather
from compmod.errors import ConfigError
from compmod.losses import byol_loss
from compmod.methods.base import ProjectorParams, StepOutput, register_method
from compmod.methods.predictor import PredictorMethod
from compmod.models import byol_predictor, projector


@dataclass
class BYOLParams(ProjectorParams):
    # BYOL uses 4096 for the projector's and the predictor's hidden width (Sec. 3.3); here the
    # predictor matches the shared projector default.
    pred_hidden_dim: int = 2048
    # Base target decay: BYOL 0.996 on ImageNet (Sec. 3.3); 0.99 as solo-learn's CIFAR presets.
    ema_base: float = 0.99


class BYOL(PredictorMethod):
    """Online f, g, q; target = EMA of (f, g). loss = byol_loss(p1, t2) + byol_loss(p2, t1): the sum of
    both directions, as the paper's symmetrised L^BYOL = L + L~ (Sec. 3.1), so it lies in [0, 8]."""

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        (h1, h2), (z1, z2) = self.encode_views(x1, x2)
        assert self.target is not None
        t1, t2 = self.target(x1), self.target(x2)  # no grad
        # gathered: under data parallelism every rank computes the global batch's loss (the same value as
        # one process; DDP's average of the gradients is then the single-process gradient)
        p1, p2, t1, t2 = (gather(t) for t in (self.predictor(z1), self.predictor(z2), t1, t2))
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        return StepOutput(loss, {"ssl": loss.detach()}, (h1, h2), (z1, z2))


@register_method("byol", BYOLParams, "byol")
def build_byol(backbone: nn.Module, feat_dim: int, params: BYOLParams) -> BYOL:
    if not 0.0 <= params.ema_base <= 1.0:
        raise ConfigError(
            f"config key method.ema_base: {params.ema_base!r} is not accepted; expected a number in [0, 1]"
        )
    head = projector(feat_dim, params.proj_hidden_dim, params.proj_dim, params.proj_layers)
    predictor = byol_predictor(params.proj_dim, params.pred_hidden_dim)
    return BYOL(backbone, feat_dim, head, predictor, params.ema_base)
