"""Barlow Twins (Zbontar et al. 2021): cross-correlation of the two views' projections pushed to I."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compmod.losses import BarlowTwinsLoss
from compmod.methods.base import Check, ProjectorParams, register_method, require
from compmod.methods.two_view import TwoViewMethod
from compmod.models import projector


@dataclass
class BarlowTwinsParams(ProjectorParams):
    # FAIR main.py: projector 8192-8192-8192. Barlow Twins needs a wide output (paper Fig. 4), so the
    # output is 2048 here, as solo-learn's CIFAR preset (2048-2048), not the shared default of 128.
    proj_dim: int = 2048
    # FAIR main.py's `--lambd` default (the paper quotes 5e-3), tuned with D = 8192.
    lambda_offdiag: float = 0.0051
    # Multiplies the whole loss: solo-learn's `method_kwargs.scale_loss` (solo/losses/barlow.py; its recipes:
    # 0.1 on CIFAR and ImageNet-100, 0.048 on ImageNet). 1 is the paper's loss, Eq. 1. CompMod's lambda1
    # weighs L_mcr against the scaled loss.
    scale_loss: float = 1.0

    def checks(self, batch_size: int | None = None) -> list[Check]:
        return [
            *super().checks(batch_size),
            (self.lambda_offdiag >= 0, "lambda_offdiag", self.lambda_offdiag, "a number >= 0"),
            (self.scale_loss > 0, "scale_loss", self.scale_loss, "a float > 0"),
        ]


@register_method("barlow_twins", BarlowTwinsParams, "barlow_twins")
def build_barlow_twins(backbone: nn.Module, feat_dim: int, params: BarlowTwinsParams) -> TwoViewMethod:
    require(params.checks())
    head = projector(feat_dim, params.proj_hidden_dim, params.proj_dim, params.proj_layers)
    return TwoViewMethod(backbone, feat_dim, head, BarlowTwinsLoss(params.lambda_offdiag, params.scale_loss))
