"""SimCLR (Chen et al. 2020): a shared encoder and projector, NT-Xent between the two views."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compmod.errors import ConfigError
from compmod.losses import NTXentLoss
from compmod.methods.base import ProjectorParams, register_method
from compmod.methods.two_view import TwoViewMethod
from compmod.models import projector


@dataclass
class SimCLRParams(ProjectorParams):
    # SimCLR's CIFAR-10 temperature (Chen et al. 2020, Appendix B.9); its ImageNet runs use 0.1.
    temperature: float = 0.5


@register_method("simclr", SimCLRParams, "simclr")
def build_simclr(backbone: nn.Module, feat_dim: int, params: SimCLRParams) -> TwoViewMethod:
    if params.temperature <= 0:
        raise ConfigError(
            f"config key method.temperature: {params.temperature!r} is not accepted; expected a number > 0"
        )
    head = projector(feat_dim, params.proj_hidden_dim, params.proj_dim, params.proj_layers)
    return TwoViewMethod(backbone, feat_dim, head, NTXentLoss(params.temperature))
