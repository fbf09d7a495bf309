"""Regularizers attached to any SSL method by config: CompMod (Meta Comprehensive Regularization)."""

from compmod.meta.fusion import FUSIONS, fuse, fusion_dims
from compmod.regularizers.compmod import CompMod, CompModHead, MetaContext, RegOutput

__all__ = ["FUSIONS", "CompMod", "CompModHead", "MetaContext", "RegOutput", "fuse", "fusion_dims"]
