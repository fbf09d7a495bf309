"""Typed configuration: schema dataclasses, YAML + dotted-override loading, dumping."""

from compmod.config.augment import AUGMENT_OPS, AugmentConfig, ViewAugment
from compmod.config.load import config_from_dict, config_to_dict, dump_config, load_config
from compmod.config.schema import (
    CompModConfig,
    Config,
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    TrainConfig,
)

__all__ = [
    "AUGMENT_OPS",
    "AugmentConfig",
    "CompModConfig",
    "Config",
    "DataConfig",
    "EvalConfig",
    "MethodConfig",
    "ModelConfig",
    "TrainConfig",
    "ViewAugment",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
]
