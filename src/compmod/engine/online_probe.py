"""The online linear probe (solo-learn's online classifier): a linear head on the detached backbone features
of both training views, trained by its own SGD while the encoder pretrains, and scored on the test split
(the validation split under `data.validation_fraction`) at every epoch end.

It reads h and nothing flows back: the encoder, its optimiser and every random stream of the run are the
same with or without it. Its rate follows the run's schedule (`eval.online_linear_lr` x lr / train.lr), as
solo-learn's classifier group follows the main scheduler; momentum 0.9, no weight decay. Unlabelled rows
(label -1, e.g. STL-10's unlabelled split) are left out of its loss. Under data parallelism its gradients
are averaged over the ranks, so every rank holds the same head.

What the number means: the accuracy of a classifier that chased a moving encoder, on augmented views, for
one pass per epoch. It is the figure solo-learn's tables report ("online linear accuracy"); the offline
linear probe (`eval.linear`: 30 epochs on frozen features of unaugmented images) is the protocol of the
papers, and usually a little higher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compmod.data.augment import eval_transform
from compmod.data.datasets import ImageDataset
from compmod.distributed import average_
from compmod.eval.features import extract_features


class OnlineProbe:
    """`step` after each training step; `evaluate` at epoch ends. `lr` is the head's rate when the run's
    rate is `base_lr` (its peak)."""

    def __init__(
        self, feat_dim: int, num_classes: int, lr: float, base_lr: float, device: torch.device, seed: int
    ) -> None:
        # built without its default initialisation, which would draw from the global generator: the run's
        # random streams are the same with or without the probe
        self.head = nn.utils.skip_init(nn.Linear, feat_dim, num_classes, device=device)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            bound = 1.0 / feat_dim**0.5  # nn.Linear's default initialisation, from `g`
            self.head.weight.copy_(torch.empty(num_classes, feat_dim).uniform_(-bound, bound, generator=g))
            self.head.bias.copy_(torch.empty(num_classes).uniform_(-bound, bound, generator=g))
        self.lr, self.base_lr = lr, base_lr
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)

    def step(self, h: tuple[Tensor, Tensor], labels: Tensor, lr: float) -> Tensor:
        """One SGD step on both views' detached features at the run's current rate `lr`; the loss (0-d,
        on the device: nothing waits for it)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * lr / self.base_lr
        feats = torch.cat([v.detach().float().flatten(1) for v in h])
        target = torch.cat([labels, labels])
        # the mean over labelled rows; a batch with none gives a zero loss and gradient (not 0/0)
        summed = F.cross_entropy(self.head(feats), target, ignore_index=-1, reduction="sum")
        loss = summed / (target >= 0).sum().clamp(min=1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        average_([p.grad for p in self.head.parameters() if p.grad is not None])
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def evaluate(
        self, encoder: Callable[[Tensor], Tensor], data: ImageDataset, batch_size: int, dtype: torch.dtype
    ) -> float:
        """Top-1 (%) of the head on `encoder`'s features of `data`'s images through the evaluation
        transform (resize, normalise with `data`'s statistics; no randomness). `encoder`: the backbone
        as the final evaluation runs it (`eval.inference_encoder`: BatchNorm folded, eval.precision)."""
        size, mean, std = data.images.shape[-1], data.mean, data.std
        device = self.head.weight.device
        feats = extract_features(
            encoder, data.images, lambda x: eval_transform(x, size, mean, std).to(dtype), batch_size, device
        )
        predicted = self.head(feats.to(device).float()).argmax(dim=1).cpu()
        return float((predicted == data.labels).double().mean()) * 100.0

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
