"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, Eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compmod.losses.precision import float32_loss


def check_pair(a: torch.Tensor, b: torch.Tensor, loss: str, min_batch: int) -> None:
    """Raise ValueError unless a and b are floating (N, D) tensors of one shape with N >= min_batch."""
    for name, t in (("first", a), ("second", b)):
        if t.ndim != 2:
            raise ValueError(
                f"{loss}: expected 2-D (N, D) inputs, got {name} input of shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise ValueError(f"{loss}: expected floating-point inputs, got {name} input of dtype {t.dtype}")
    if a.shape != b.shape:
        raise ValueError(
            f"{loss}: inputs must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < min_batch:
        raise ValueError(f"{loss}: needs a batch of at least {min_batch} rows, got {a.shape[0]}")


@float32_loss
def ntxent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over the 2N samples of two views (SimCLR, Chen et al. 2020, Eq. 1).

    z1, z2: (N, D) projections of two views; row i of z1 and row i of z2 are a positive pair. Rows are
    L2-normalised; for each of the 2N anchors, loss = -log(exp(s_pos / t) / sum_{k != anchor} exp(s_k / t))
    with cosine similarities s over the 2N - 1 other samples. Returns the mean over the 2N anchors, a
    scalar in the input dtype. Needs N >= 2.
    """
    check_pair(z1, z2, "ntxent", min_batch=2)
    if temperature <= 0:
        raise ValueError(f"ntxent: temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    positives = torch.cat([idx + n, idx])  # anchor i in view 1 pairs with i + N in view 2, and back
    return F.cross_entropy(logits, positives)


class NTXentLoss(nn.Module):
    """`ntxent` as a module. temperature=0.5: SimCLR's best value on CIFAR-10 (Chen et al. 2020, App. B.9)."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"NTXentLoss: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return ntxent(z1, z2, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
