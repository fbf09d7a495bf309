"""SSL losses: one pure function and one config-free module each; every docstring names its reference."""

from compmod.losses.barlow_twins import BarlowTwinsLoss, barlow_twins
from compmod.losses.byol import BYOLLoss, byol_loss
from compmod.losses.mec import comp_loss, lambda_at, mcr_loss, mec_lambda, mec_taylor
from compmod.losses.ntxent import NTXentLoss, ntxent

__all__ = [
    "BYOLLoss",
    "BarlowTwinsLoss",
    "NTXentLoss",
    "barlow_twins",
    "byol_loss",
    "comp_loss",
    "lambda_at",
    "mcr_loss",
    "mec_lambda",
    "mec_taylor",
    "ntxent",
]
