"""SSL methods, one file each, registered by name in `METHODS`."""

from compmod.methods import barlow_twins, byol, simclr  # noqa: F401  (registers the methods)
from compmod.methods.base import METHODS, MethodSpec, ProjectorParams, SSLMethod, StepOutput, register_method

__all__ = ["METHODS", "MethodSpec", "ProjectorParams", "SSLMethod", "StepOutput", "register_method"]
