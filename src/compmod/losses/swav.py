"""SwAV (Caron et al. 2020): Sinkhorn-Knopp codes and the swapped-prediction loss (Eq. 2-3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compmod.losses.ntxent import check_pair
from compmod.losses.precision import float32_loss


def sinkhorn(scores: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Codes Q (B, P) for prototype scores (B, P): facebookresearch/swav main_swav.py `distributed_sinkhorn`.

    Q starts as exp(scores / eps) scaled to sum 1; each iteration scales every prototype's column to total
    1/P, then every sample's row to total 1/B; the result is multiplied by B. So each row sums to exactly 1
    (a soft assignment) and each prototype receives about B/P samples (exactly in the limit of iterations:
    the equal-partition constraint of Eq. 3). Computed from `scores.detach()`, in at least float32, with
    the scores' maximum subtracted before exp (a common factor, removed by the first scaling). Runs on the
    rows it is given: under data parallelism pass the gathered (global) scores. Returns a detached tensor.
    """
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"sinkhorn: expected non-empty 2-D (B, P) scores, got shape {tuple(scores.shape)}")
    if eps <= 0:
        raise ValueError(f"sinkhorn: eps must be > 0, got {eps}")
    if iters < 1:
        raise ValueError(f"sinkhorn: iters must be >= 1, got {iters}")
    s = scores.detach().to(torch.promote_types(scores.dtype, torch.float32))
    q = torch.exp((s - s.max()) / eps)
    q = q / q.sum()
    b, p = q.shape
    for _ in range(iters):
        q = q / (p * q.sum(dim=0, keepdim=True))  # prototype marginals 1/P
        q = q / (b * q.sum(dim=1, keepdim=True))  # sample marginals 1/B
    return q * b


@float32_loss
def swapped_prediction(
    scores1: torch.Tensor,
    scores2: torch.Tensor,
    codes1: torch.Tensor,
    codes2: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """1/2 [l(scores2, codes1) + l(scores1, codes2)], l(s, q) = -mean_i sum_k q_ik log softmax(s_i / t)_k.

    The code of each view is predicted from the other view's scores (SwAV, Eq. 2 with Eq. 1's swap), for
    two views as main_swav.py's loss loop with nmb_crops [2], crops_for_assign [0, 1]. scores_v: (N, P);
    codes_v: (N, P) targets, used as given (`sinkhorn` detaches them). Returns a scalar.
    """
    check_pair(scores1, scores2, "swapped_prediction", min_batch=1)
    check_pair(codes1, codes2, "swapped_prediction", min_batch=1)
    if codes1.shape != scores1.shape:
        raise ValueError(
            f"swapped_prediction: codes must have the scores' shape {tuple(scores1.shape)}, "
            f"got {tuple(codes1.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"swapped_prediction: temperature must be > 0, got {temperature}")

    def cross_entropy(s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return -(q * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean()

    return (cross_entropy(scores2, codes1) + cross_entropy(scores1, codes2)) / 2


@float32_loss
def swav_loss(
    scores1: torch.Tensor,
    scores2: torch.Tensor,
    temperature: float = 0.1,
    eps: float = 0.05,
    iters: int = 3,
    queue1: torch.Tensor | None = None,
    queue2: torch.Tensor | None = None,
) -> torch.Tensor:
    """SwAV's loss for two views: codes by `sinkhorn` on each view's detached scores, then
    `swapped_prediction`. queue_v: optional (M, P) scores of queued embeddings of view v (no gradient),
    stacked above the batch's scores for Sinkhorn; only the batch's N codes are kept, as main_swav.py
    (`distributed_sinkhorn(out)[-bs:]`)."""
    codes = []
    for scores, queue in ((scores1, queue1), (scores2, queue2)):
        rows = scores.detach()
        if queue is not None:
            rows = torch.cat([queue.detach().to(rows.dtype), rows])
        codes.append(sinkhorn(rows, eps, iters)[-scores.shape[0] :])
    return swapped_prediction(scores1, scores2, codes[0], codes[1], temperature)


class SwAVLoss(nn.Module):
    """`swav_loss` as a module. Defaults: main_swav.py (temperature 0.1, epsilon 0.05, 3 Sinkhorn
    iterations), also solo-learn's CIFAR preset."""

    def __init__(self, temperature: float = 0.1, eps: float = 0.05, iters: int = 3) -> None:
        super().__init__()
        for name, value, ok in (("temperature", temperature, temperature > 0), ("eps", eps, eps > 0)):
            if not ok:
                raise ValueError(f"SwAVLoss: {name} must be > 0, got {value}")
        if iters < 1:
            raise ValueError(f"SwAVLoss: iters must be >= 1, got {iters}")
        self.temperature, self.eps, self.iters = temperature, eps, iters

    def forward(
        self,
        scores1: torch.Tensor,
        scores2: torch.Tensor,
        queue1: torch.Tensor | None = None,
        queue2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return swav_loss(scores1, scores2, self.temperature, self.eps, self.iters, queue1, queue2)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, eps={self.eps}, iters={self.iters}"
