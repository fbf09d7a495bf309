"""W-MSE (Ermolov et al. 2021): whiten random sub-batches of each view, then pull the views together."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from compmod.distributed import gather
from compmod.losses.wmse import wmse_loss
from compmod.methods.base import Check, ProjectorParams, SSLMethod, StepOutput, register_method, require
from compmod.models import projector
from compmod.models.host_mirror import mirror, set_mirrored


@dataclass
class WMSEParams(ProjectorParams):
    # htdt/self-supervised CIFAR defaults: --emb 64, --head_size 1024, --head_layers 2, --w_size 128,
    # --w_iter 1.
    proj_hidden_dim: int = 1024
    proj_dim: int = 64
    proj_layers: int = 2
    w_size: int = 128  # rows per whitened sub-batch; a global batch smaller than this is whitened whole
    w_iter: int = 1  # whitening iterations (fresh sub-batch split each)
    # Shrinkage (1 - eps) Sigma + eps I. The official --w_eps default is 0 (exact whitening, needs
    # w_size > proj_dim); 1e-3 keeps the Cholesky factor defined when a sub-batch has no more rows than
    # dimensions (small batches, tests) and is negligible next to Sigma's eigenvalues otherwise.
    whiten_eps: float = 1e-3

    def checks(self, batch_size: int | None = None) -> list[Check]:
        """The projector's checks, and W-MSE's: each global batch of `batch_size` rows is cut into
        sub-batches of min(w_size, batch_size) rows, so that must divide it; exact whitening
        (whiten_eps = 0) needs more rows per sub-batch than proj_dim dimensions."""
        out = [
            *super().checks(batch_size or 2),
            (self.w_size >= 2, "w_size", self.w_size, "an integer >= 2"),
            (self.w_iter >= 1, "w_iter", self.w_iter, "an integer >= 1"),
            (0.0 <= self.whiten_eps <= 1.0, "whiten_eps", self.whiten_eps, "a number in [0, 1]"),
            (
                self.whiten_eps > 0 or self.w_size > self.proj_dim,
                "w_size",
                self.w_size,
                "a larger value: exact whitening (method.whiten_eps=0) needs w_size > "
                f"method.proj_dim={self.proj_dim} (or set whiten_eps > 0)",
            ),
        ]
        if batch_size is not None:
            rows = min(self.w_size, batch_size)
            out += [
                (
                    batch_size % rows == 0,
                    "w_size",
                    self.w_size,
                    f"a divisor of train.batch_size={batch_size} (or w_size >= batch_size: the batch is "
                    "whitened whole)",
                ),
                (
                    self.whiten_eps > 0 or rows > self.proj_dim,
                    "whiten_eps",
                    self.whiten_eps,
                    f"> 0 when a sub-batch (min(w_size, train.batch_size) = {rows} rows) is not larger than "
                    f"method.proj_dim={self.proj_dim}: exact whitening needs more rows than dimensions",
                ),
            ]
        return out


class WMSE(SSLMethod):
    """Shared f, g; loss = `wmse_loss` of the two views' projections on the global batch. The sub-batch
    split is drawn from a generator seeded by (`seed`, the `step` buffer), so forward is a deterministic
    function of parameters, buffers and inputs; `after_optimizer_step` advances `step`."""

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        projector: nn.Module,
        w_size: int,
        w_iter: int,
        eps: float,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.projector = projector
        self.w_size, self.w_iter, self.eps, self.seed = w_size, w_iter, eps, seed
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        mirror(self, "step")

    def permutations(self, n: int) -> torch.Tensor:
        """(w_iter, n) permutations for the current step (the same on every rank: all count steps alike)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.host["step"])
        return torch.stack([torch.randperm(n, generator=g) for _ in range(self.w_iter)])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> StepOutput:
        (h1, h2), (z1, z2) = self.encode_views(x1, x2)
        g1, g2 = gather(z1), gather(z2)
        n = g1.shape[0]
        size = min(self.w_size, n)
        if n % size:
            raise ValueError(
                f"W-MSE: the global batch of {n} is not a multiple of method.w_size={self.w_size}"
            )
        loss = wmse_loss(g1, g2, self.permutations(n), size, self.eps)
        return StepOutput(loss, {"ssl": loss.detach()}, (h1, h2), (z1, z2))

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        set_mirrored(self, "step", self.host["step"] + 1)


@register_method("wmse", WMSEParams, "simclr")
def build_wmse(backbone: nn.Module, feat_dim: int, params: WMSEParams) -> WMSE:
    require(params.checks())  # config validation also ran the batch-size ones
    head = projector(feat_dim, params.proj_hidden_dim, params.proj_dim, params.proj_layers)
    return WMSE(backbone, feat_dim, head, params.w_size, params.w_iter, params.whiten_eps)
