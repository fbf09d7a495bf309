"""SimCLR (Chen et al. 2020): a shared encoder and projector, NT-Xent between the two views."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compmod.errors import ConfigError
from compmod.losses import NTXentLoss
from compmod.methods.base import ProjectorParams, SSLMethod, StepOutput, register_method
from compmod.models import projector


@dataclass
class SimCLRParams(ProjectorParams):
    # SimCLR's CIFAR-10 temperature (Chen et al. 2020, Appendix B.9); its ImageNet runs use 0.1.
    temperature: float = 0.5


class SimCLR(SSLMethod):
    """h = f(x), z = g(h) for each view; loss = NT-Xent(z1, z2)."""

    def __init__(self, backbone: nn.Module, feat_dim: int, projector: nn.Module, loss: NTXentLoss) -> None:
        super().__init__()
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.projector = projector
        self.loss = loss

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        h1, h2 = self.backbone(x1), self.backbone(x2)
        z1, z2 = self.projector(h1), self.projector(h2)
        loss = self.loss(z1, z2)
        return StepOutput(loss, {"ssl": loss.detach()}, (h1, h2), (z1, z2))


@register_method("simclr", SimCLRParams, "simclr")
def build_simclr(backbone: nn.Module, feat_dim: int, params: SimCLRParams) -> SimCLR:
    if params.temperature <= 0:
        raise ConfigError(
            f"config key method.temperature: {params.temperature!r} is not accepted; expected a number > 0"
        )
    head = projector(feat_dim, params.proj_hidden_dim, params.proj_dim, params.proj_layers)
    return SimCLR(backbone, feat_dim, head, NTXentLoss(params.temperature))
