"""SwAV (Caron et al. 2020): online codes by Sinkhorn-Knopp, each predicted from the other view.

As facebookresearch/swav main_swav.py and src/resnet50.py, with two views only (no multi-crop):
- head Linear-BN-ReLU-Linear (hidden 2048, output 128), embeddings L2-normalised, prototypes a bias-free
  Linear(proj_dim, num_prototypes) whose rows are unit vectors before every forward (normalised here at
  construction and after each optimiser step, official: at the start of each iteration);
- prototypes get no gradient for the first `freeze_prototypes_steps` steps (official: `p.grad = None`
  after backward; here the prototypes' weight is detached in forward while the step buffer is below it);
- optional queue of past embeddings per view (main_swav.py `queue`): filled from step `queue_start_step`
  (official: from epoch `epoch_queue_starts`), used for Sinkhorn once full, scored by the current
  prototypes without gradient.
Sinkhorn runs on the gathered (global) batch, so every rank computes the codes of a single process; this
equals the official `distributed_sinkhorn`, whose all-reduces sum over the ranks' rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compmod.distributed import gather
from compmod.losses.swav import SwAVLoss
from compmod.methods.base import (
    Check,
    ProjectorParams,
    SSLMethod,
    StepOutput,
    register_method,
    require,
    runs_on_own_parameters,
)
from compmod.models import FeatureQueue, projector
from compmod.models.host_mirror import mirror, set_mirrored


@dataclass
class SwAVParams(ProjectorParams):
    proj_layers: int = 2  # resnet50.py projection_head: Linear-BN-ReLU-Linear
    num_prototypes: int = 3000  # main_swav.py --nmb_prototypes (solo-learn CIFAR: 3000)
    temperature: float = 0.1  # main_swav.py --temperature
    sinkhorn_iters: int = 3  # main_swav.py --sinkhorn_iterations
    sinkhorn_eps: float = 0.05  # main_swav.py --epsilon
    queue_size: int = 0  # embeddings per view, over the global batch; 0 = no queue (main_swav.py default)
    queue_start_step: int = 0  # step from which the queue is filled (official: epoch 15 of 800)
    freeze_prototypes_steps: int = 313  # main_swav.py --freeze_prototypes_niters

    def checks(self, batch_size: int | None = None) -> list[Check]:
        return [
            *super().checks(batch_size),
            (self.num_prototypes >= 1, "num_prototypes", self.num_prototypes, "an integer >= 1"),
            (self.temperature > 0, "temperature", self.temperature, "a number > 0"),
            (self.sinkhorn_iters >= 1, "sinkhorn_iters", self.sinkhorn_iters, "an integer >= 1"),
            (self.sinkhorn_eps > 0, "sinkhorn_eps", self.sinkhorn_eps, "a number > 0"),
            (self.queue_size >= 0, "queue_size", self.queue_size, "an integer >= 0 (0: no queue)"),
            (self.queue_start_step >= 0, "queue_start_step", self.queue_start_step, "an integer >= 0"),
            (
                self.freeze_prototypes_steps >= 0,
                "freeze_prototypes_steps",
                self.freeze_prototypes_steps,
                "an integer >= 0",
            ),
        ]


class SwAV(SSLMethod):
    """f, g, prototypes C; loss = swav_loss(e1 C^T, e2 C^T) with e_v = g(f(x_v)) / |.| on the global batch."""

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        projector: nn.Module,
        prototypes: nn.Linear,
        loss: SwAVLoss,
        queue: FeatureQueue | None = None,
        queue_start_step: int = 0,
        freeze_prototypes_steps: int = 0,
    ) -> None:
        super().__init__()
        self.backbone, self.feat_dim, self.projector, self.loss = backbone, feat_dim, projector, loss
        self.prototypes, self.queue = prototypes, queue
        self.queue_start_step, self.freeze_prototypes_steps = queue_start_step, freeze_prototypes_steps
        self.unused_parameters = freeze_prototypes_steps > 0  # DDP: the frozen prototypes get no gradient
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimiser steps taken
        mirror(self, "step")
        self._pending: torch.Tensor | None = None
        self.normalize_prototypes_()

    @torch.no_grad()
    def normalize_prototypes_(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        (h1, h2), (z1, z2) = self.encode_views(x1, x2)
        e1, e2 = gather(F.normalize(z1, dim=1)), gather(F.normalize(z2, dim=1))
        c = self.prototypes.weight
        if self.host["step"] < self.freeze_prototypes_steps:
            c = c.detach()
        queued1 = queued2 = None
        if self.queue is not None and self.queue.full:  # (2, size, P) scores, no gradient
            queued1, queued2 = self.queue.rows.detach() @ c.detach().T
        loss = self.loss(e1 @ c.T, e2 @ c.T, queued1, queued2)
        if runs_on_own_parameters(self):
            self._pending = torch.stack([e1, e2]).detach()
        return StepOutput(loss, {"ssl": loss.detach()}, (h1, h2), (z1, z2))

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """Prototypes back to unit rows; the last batch's embeddings into the queue (from
        `queue_start_step`); one more step counted."""
        self.normalize_prototypes_()
        queueing = self.host["step"] >= self.queue_start_step
        if self.queue is not None and self._pending is not None and queueing:
            self.queue.push_(self._pending)
        self._pending = None
        set_mirrored(self, "step", self.host["step"] + 1)


@register_method("swav", SwAVParams, "simclr")
def build_swav(backbone: nn.Module, feat_dim: int, params: SwAVParams) -> SwAV:
    require(params.checks())
    head = projector(feat_dim, params.proj_hidden_dim, params.proj_dim, params.proj_layers)
    prototypes = nn.Linear(params.proj_dim, params.num_prototypes, bias=False)
    queue = FeatureQueue(2, params.queue_size, params.proj_dim) if params.queue_size > 0 else None
    loss = SwAVLoss(params.temperature, params.sinkhorn_eps, params.sinkhorn_iters)
    return SwAV(
        backbone,
        feat_dim,
        head,
        prototypes,
        loss,
        queue,
        params.queue_start_step,
        params.freeze_prototypes_steps,
    )
