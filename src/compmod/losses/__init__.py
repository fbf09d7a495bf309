"""SSL losses: one pure function and one config-free module each; every docstring names its reference."""

from compmod.losses.barlow_twins import BarlowTwinsLoss, barlow_twins
from compmod.losses.byol import BYOLLoss, byol_loss
from compmod.losses.mec import comp_loss, lambda_at, mcr_loss, mec_lambda, mec_loss, mec_taylor
from compmod.losses.moco import MoCoLoss, infonce_queue
from compmod.losses.ntxent import NTXentLoss, ntxent
from compmod.losses.simsiam import simsiam_loss
from compmod.losses.swav import SwAVLoss, sinkhorn, swapped_prediction, swav_loss
from compmod.losses.vicreg import VICRegLoss, vicreg_loss, vicreg_terms
from compmod.losses.wmse import whiten, wmse_loss

__all__ = [
    "BYOLLoss",
    "BarlowTwinsLoss",
    "MoCoLoss",
    "NTXentLoss",
    "SwAVLoss",
    "VICRegLoss",
    "barlow_twins",
    "byol_loss",
    "comp_loss",
    "infonce_queue",
    "lambda_at",
    "mcr_loss",
    "mec_lambda",
    "mec_loss",
    "mec_taylor",
    "ntxent",
    "simsiam_loss",
    "sinkhorn",
    "swapped_prediction",
    "swav_loss",
    "vicreg_loss",
    "vicreg_terms",
    "whiten",
    "wmse_loss",
]
