"""Regularizers attached to any SSL method by config: CompMod (Meta Comprehensive Regularization)."""

from compmod.regularizers.compmod import CompMod, CompModHead, RegOutput
from compmod.regularizers.fusion import FUSIONS, fuse, fusion_dims

__all__ = ["FUSIONS", "CompMod", "CompModHead", "RegOutput", "fuse", "fusion_dims"]
