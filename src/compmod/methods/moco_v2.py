"""MoCo v2 (Chen et al. 2020b): queries against a momentum key encoder's key and a queue of past keys.

Choices, where the references differ:
- symmetric loss, as solo-learn `mocov2plus.py`: each view is a query once, against the other view's key
  and a queue of that other view's past keys (one queue per view); the official main_moco.py uses view 1
  as the query only. The loss is the mean of the two directions.
- head Linear-ReLU-Linear with biases and no BatchNorm, as builder.py with --mlp (hidden 2048 = the
  ResNet-50 feature width, output 128).
- key-encoder momentum: BYOL's cosine schedule from `ema_base` 0.99 (solo-learn's CIFAR value) to 1;
  the official ImageNet run uses a constant 0.999.
- no shuffling BatchNorm: the official "Shuffle BN" permutes the batch across GPUs; in one process there
  is nothing to shuffle with, and it is not done under data parallelism either.
- the queue holds the global batch's keys (gathered), so it is the same on every rank; its pointer wraps
  around, so its size need not be a multiple of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compmod.distributed import gather
from compmod.losses.moco import MoCoLoss
from compmod.methods.base import (
    Check,
    ProjectorParams,
    SSLMethod,
    StepOutput,
    register_method,
    require,
    runs_on_own_parameters,
)
from compmod.models import EMATeacher, FeatureQueue, mlp


@dataclass
class MoCoV2Params(ProjectorParams):
    proj_layers: int = 2  # builder.py --mlp: Linear-ReLU-Linear, no BatchNorm
    temperature: float = 0.2  # MoCo v2 (main_moco.py --moco-t 0.2)
    queue_size: int = 65536  # K, negatives per view (He et al. 2020; main_moco.py --moco-k)
    ema_base: float = 0.99  # cosine schedule from here to 1 (solo-learn CIFAR); official: constant 0.999

    def checks(self, batch_size: int | None = None) -> list[Check]:
        return [
            *super().checks(batch_size),
            (self.temperature > 0, "temperature", self.temperature, "a number > 0"),
            (self.queue_size >= 1, "queue_size", self.queue_size, "an integer >= 1"),
            (0.0 <= self.ema_base <= 1.0, "ema_base", self.ema_base, "a number in [0, 1]"),
        ]


class MoCoV2(SSLMethod):
    """Query network f, g; key encoder = EMA of (f, g); loss = 1/2 [infonce(q1, k2, Q2) + infonce(q2, k1, Q1)]
    on the global batch. `forward` only reads the queue; `after_optimizer_step` enqueues the keys of the
    last forward that ran on the module's own parameters and moves the key encoder."""

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        projector: nn.Module,
        loss: MoCoLoss,
        queue: FeatureQueue,
        ema_base: float,
    ) -> None:
        super().__init__()
        self.backbone, self.feat_dim, self.projector, self.loss = backbone, feat_dim, projector, loss
        self.queue, self.ema_base = queue, ema_base
        self.key_encoder = EMATeacher(self.online())
        self._pending: torch.Tensor | None = None

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        (h1, h2), (z1, z2) = self.encode_views(x1, x2)
        k1, k2 = (gather(F.normalize(self.key_encoder(x), dim=1).detach()) for x in (x1, x2))
        q1, q2 = gather(z1), gather(z2)
        negatives = self.queue.rows.detach()
        loss = (self.loss(q1, k2, negatives[1]) + self.loss(q2, k1, negatives[0])) / 2
        if runs_on_own_parameters(self):
            self._pending = torch.stack([k1, k2])
        return StepOutput(loss, {"ssl": loss.detach()}, (h1, h2), (z1, z2))

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """Enqueue the last batch's keys, then move the key encoder (cosine momentum at `progress`)."""
        if self._pending is not None:
            self.queue.push_(self._pending)
            self._pending = None
        self.move_teacher(self.key_encoder, self.ema_base, progress)


@register_method("moco_v2", MoCoV2Params, "simclr")
def build_moco_v2(backbone: nn.Module, feat_dim: int, params: MoCoV2Params) -> MoCoV2:
    require(params.checks())
    head = mlp(feat_dim, params.proj_hidden_dim, params.proj_dim, params.proj_layers, batch_norm=False)
    queue = FeatureQueue(2, params.queue_size, params.proj_dim, seed=0)
    return MoCoV2(backbone, feat_dim, head, MoCoLoss(params.temperature), queue, params.ema_base)
