"""InfoNCE against a queue of negative keys: MoCo's contrastive loss (He et al. 2020, Eq. 1; MoCo v2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compmod.losses.ntxent import check_pair
from compmod.losses.precision import float32_loss


@float32_loss
def infonce_queue(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """-log exp(q.k+ / t) / (exp(q.k+ / t) + sum_j exp(q.n_j / t)), averaged over rows (MoCo, Eq. 1).

    q: (N, D) queries; k: (N, D) their positive keys (row i of k is the positive of row i of q); both are
    L2-normalised here. queue: (K, D) negative keys n_j, used as given (the method stores unit-norm keys,
    as facebookresearch/moco builder.py normalises keys once before they enter its queue); K may be 0.
    The logits of row i are [q_i.k_i, q_i.n_1, ..., q_i.n_K] / t with the positive at index 0, as
    builder.py `MoCo.forward`. The key is used as given: the method passes detached keys.
    Returns a scalar in the input dtype. A batch of one row is valid.
    """
    check_pair(q, k, "infonce_queue", min_batch=1)
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(
            f"infonce_queue: queue must be (K, {q.shape[1]}) to match the keys, got {tuple(queue.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"infonce_queue: temperature must be > 0, got {temperature}")
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
    negatives = q @ queue.to(q.dtype).T  # (N, K)
    logits = torch.cat([positive, negatives], dim=1) / temperature
    target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, target)


class MoCoLoss(nn.Module):
    """`infonce_queue` as a module. temperature=0.2: MoCo v2 (Chen et al. 2020b; main_moco.py --moco-t 0.2);
    MoCo v1 used 0.07."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"MoCoLoss: temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        return infonce_queue(q, k, queue, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
