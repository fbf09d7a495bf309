"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on the two views' embeddings."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from compmod.errors import ConfigError
from compmod.losses.vicreg import VICRegLoss
from compmod.methods.base import ProjectorParams, register_method
from compmod.methods.two_view import TwoViewMethod
from compmod.models import projector


@dataclass
class VICRegParams(ProjectorParams):
    # main_vicreg.py: expander 8192-8192-8192; 2048 wide here as Barlow Twins' preset (also a wide output).
    proj_dim: int = 2048
    # main_vicreg.py's --sim-coeff / --std-coeff / --cov-coeff (paper Sec. 4.1: lambda = mu = 25, nu = 1),
    # in the code's convention: the variance term is the mean over the two branches (losses/vicreg.py).
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0


@register_method("vicreg", VICRegParams, "barlow_twins")
def build_vicreg(backbone: nn.Module, feat_dim: int, params: VICRegParams) -> TwoViewMethod:
    for key in ("sim_coeff", "std_coeff", "cov_coeff"):
        value = getattr(params, key)
        if not value >= 0:
            raise ConfigError(f"config key method.{key}: {value!r} is not accepted; expected a number >= 0")
    head = projector(feat_dim, params.proj_hidden_dim, params.proj_dim, params.proj_layers)
    loss = VICRegLoss(params.sim_coeff, params.std_coeff, params.cov_coeff)
    # TwoViewMethod gathers z1, z2: variance and covariance are taken over the global batch, as
    # main_vicreg.py's FullGatherLayer
    return TwoViewMethod(backbone, feat_dim, head, loss)
