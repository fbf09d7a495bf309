"""Backbones (registered in `BACKBONES`), MLP heads and the EMA teacher helper."""

from compmod.models.backbones import BACKBONES, SmallCNN, build_backbone
from compmod.models.ema import EMATeacher, cosine_momentum
from compmod.models.heads import byol_predictor, mlp, projector
from compmod.models.queue import FeatureQueue

__all__ = [
    "BACKBONES",
    "EMATeacher",
    "FeatureQueue",
    "SmallCNN",
    "build_backbone",
    "byol_predictor",
    "cosine_momentum",
    "mlp",
    "projector",
]
