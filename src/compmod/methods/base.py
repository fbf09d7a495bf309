"""What every SSL method shares: its step output, a thin base module, and the method registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from compmod.errors import ConfigError
from compmod.models import EMATeacher, cosine_momentum
from compmod.registry import Registry


@dataclass
class StepOutput:
    """One training step's result.

    loss: scalar to minimise. parts: named scalar loss terms (detached copies are logged).
    h: backbone features of the two views, each (N, d'). z: projections, each (N, d).
    CompMod attaches to exactly `h` and `z`.
    """

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    h: tuple[torch.Tensor, torch.Tensor]
    z: tuple[torch.Tensor, torch.Tensor]


Check = tuple[bool, str, Any, str]  # (passes, key under `method.`, value, what is accepted)


def require(checks: list[Check]) -> None:
    """Raise the `ConfigError` of the first failing check: the one message of each method value, which
    config validation (`config.validate`, with the batch size) reports the same way before any work."""
    for ok, key, value, accepted in checks:
        if not ok:
            raise ConfigError(f"config key method.{key}: {value!r} is not accepted; expected {accepted}")


@dataclass
class ProjectorParams:
    """Projector g_phi: `proj_layers` linear layers (BN + ReLU between), hidden width, output dim."""

    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    proj_layers: int = 3

    def checks(self, batch_size: int | None = None) -> list[Check]:
        """Every check of the method's values (`require` raises the first failing one); config validation
        runs them before any work starts with `batch_size` = the global `train.batch_size`, a builder
        without it (None: the checks that need it are left to validation)."""
        return [
            (self.proj_hidden_dim >= 1, "proj_hidden_dim", self.proj_hidden_dim, "an integer >= 1"),
            (self.proj_dim >= 1, "proj_dim", self.proj_dim, "an integer >= 1"),
            (self.proj_layers >= 1, "proj_layers", self.proj_layers, "an integer >= 1"),
        ]


class SSLMethod(nn.Module):
    """Thin base: a backbone f_theta, `forward(x1, x2) -> StepOutput`, and an after-step hook."""

    backbone: nn.Module
    projector: nn.Module
    feat_dim: int
    # True when some steps leave trainable parameters without a gradient (e.g. frozen prototypes): DDP
    # must then search the graph for them every step.
    unused_parameters: bool = False

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        """Called after each optimizer step; `progress` in [0, 1] is the fraction of training done."""

    def encode_views(
        self, x1: torch.Tensor, x2: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """((h1, h2), (z1, z2)): each view's backbone features and their projection."""
        h1, h2 = self.backbone(x1), self.backbone(x2)
        return (h1, h2), (self.projector(h1), self.projector(h2))

    def online(self) -> nn.Sequential:
        """(f, g) as one module: what an EMA teacher (BYOL's target, MoCo's key encoder) copies."""
        return nn.Sequential(self.backbone, self.projector)

    @torch.no_grad()
    def move_teacher(self, teacher: EMATeacher, ema_base: float, progress: float) -> None:
        """Move `teacher` towards (f, g) with BYOL's cosine momentum from `ema_base` to 1 at `progress`."""
        teacher.update(self.online(), cosine_momentum(ema_base, progress))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, d') used for evaluation."""
        return self.backbone(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[h | z] (N, d' + d): backbone features and their projection, for representation diagnostics."""
        h = self.backbone(x)
        return torch.cat([h, self.projector(h)], dim=1)


def runs_on_own_parameters(module: nn.Module) -> bool:
    """False inside torch.func.functional_call with swapped-in tensors (CompMod's look-ahead passes): then a
    forward must not record anything for the after-step hook."""
    return all(isinstance(p, nn.Parameter) for p in module.parameters())


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its builder, its typed parameters and its augmentation preset."""

    build: Callable[[nn.Module, int, Any], SSLMethod]  # (backbone, feat_dim, params) -> method
    params: type = field(default=ProjectorParams)
    augment_preset: str = "default"


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(
    name: str, params: type = ProjectorParams, augment_preset: str = "default"
) -> Callable[[Callable[..., SSLMethod]], Callable[..., SSLMethod]]:
    """Decorator: `@register_method("simclr", SimCLRParams, "simclr")` over a builder function."""

    def deco(build: Callable[..., SSLMethod]) -> Callable[..., SSLMethod]:
        METHODS.register(name)(MethodSpec(build, params, augment_preset))
        return build

    return deco
