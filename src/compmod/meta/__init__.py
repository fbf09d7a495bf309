"""The bi-level (one-step look-ahead) update of the CompMod head: exact, JVP and off."""

from compmod.meta.hypergrad import (
    MODES,
    BilevelProblem,
    hypergrad_exact,
    hypergrad_jvp,
    hypergrad_off,
    objective,
)

__all__ = ["MODES", "BilevelProblem", "hypergrad_exact", "hypergrad_jvp", "hypergrad_off", "objective"]
