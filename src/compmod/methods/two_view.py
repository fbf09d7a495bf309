"""The shared-encoder two-view method: h = f(x), z = g(h) for each view, then a loss of (z1, z2).

SimCLR (NT-Xent) and Barlow Twins (cross-correlation) are this module with different losses. Both couple
the samples of a batch, so the loss takes the gathered global batch (`compmod.distributed.gather`): under
data parallelism every rank computes the loss a single process computes on the whole batch (SimCLR's
negatives and Barlow Twins' cross-correlation and its standardisation over all of it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compmod.distributed import gather
from compmod.methods.base import SSLMethod, StepOutput


class TwoViewMethod(SSLMethod):
    """Backbone f and projector g shared by both views (each view has its own BatchNorm statistics);
    loss = `loss(z1, z2)`."""

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        projector: nn.Module,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.projector = projector
        self.loss = loss

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        (h1, h2), (z1, z2) = self.encode_views(x1, x2)
        loss = self.loss(gather(z1), gather(z2))
        return StepOutput(loss, {"ssl": loss.detach()}, (h1, h2), (z1, z2))
