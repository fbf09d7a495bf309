"""SSL methods, one file each, registered by name in `METHODS`.

Every module of this package is imported here, so a new method file registers itself by existing.
"""

import importlib
import pkgutil

from compmod.methods.base import METHODS, MethodSpec, ProjectorParams, SSLMethod, StepOutput, register_method

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "MethodSpec", "ProjectorParams", "SSLMethod", "StepOutput", "register_method"]
