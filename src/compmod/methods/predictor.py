"""The online network of predictor methods (BYOL, SimSiam, MEC): backbone f, projector g and predictor q,
with an optional EMA teacher of (f, g) moved after every optimiser step."""

from __future__ import annotations

import torch
from torch import nn

from compmod.methods.base import SSLMethod
from compmod.models import EMATeacher


class PredictorMethod(SSLMethod):
    """Holds f, g, q and, when `ema_base` is given, `target` = EMA of (f, g) with BYOL's cosine momentum
    schedule from `ema_base` to 1. Subclasses define `forward`."""

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        projector: nn.Module,
        predictor: nn.Module,
        ema_base: float | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.projector = projector
        self.predictor = predictor
        self.ema_base = ema_base
        self.target = EMATeacher(self.online()) if ema_base is not None else None

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """Move the teacher towards the online network (momentum `cosine_momentum(ema_base, progress)`)."""
        if self.target is not None and self.ema_base is not None:
            self.move_teacher(self.target, self.ema_base, progress)
