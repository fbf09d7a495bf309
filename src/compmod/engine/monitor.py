"""Online monitoring during pretraining: kNN top-1 on a held-out part of the labelled train split, and the
representation diagnostics the paper's argument is about (effective rank and coding rate of h and z).

Every `eval.monitor_every` epochs the Trainer calls `OnlineMonitor.measure(method)`; the values go into
that epoch's summary record of `metrics.jsonl` as `epoch_knn_top1`, `epoch_h_effective_rank`, ...
(`compmod report` plots them). The bank and the queries are fixed for the whole run: the first
`eval.monitor_images` labelled train images, of which a seeded fifth are the queries and the rest the
bank; the test split is never looked at during training.
"""

from __future__ import annotations

import torch

from compmod.config.schema import Config
from compmod.data.augment import eval_transform
from compmod.eval.diagnostics import representation_stats
from compmod.eval.features import extract_features
from compmod.eval.knn import knn_accuracy
from compmod.methods.base import SSLMethod


class OnlineMonitor:
    def __init__(self, cfg: Config, device: torch.device) -> None:
        from compmod.data.build import build_dataset

        data = build_dataset(cfg, "train")
        n = min(cfg.eval.monitor_images, len(data))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.train.seed + 3))
        queries, bank = order[: max(1, n // 5)], order[max(1, n // 5) :]
        self.images, self.labels = data.images[:n], data.labels[:n]
        self.bank, self.queries = bank.sort().values, queries.sort().values
        self.k, self.device = cfg.eval.knn_k, device
        self.batch_size = cfg.eval.batch_size
        size = cfg.data.image_size or data.images.shape[-1]
        mean, std = data.mean, data.std
        self.transform = lambda x: eval_transform(x, size, mean, std)

    @torch.no_grad()
    def measure(self, method: SSLMethod, dtype: torch.dtype = torch.float32) -> dict[str, float]:
        """kNN top-1 (k = eval.knn_k) of backbone features, and the diagnostics of [h | z]."""
        d = method.feat_dim
        feats = extract_features(
            method.embed,
            self.images,
            lambda x: self.transform(x).to(dtype),
            batch_size=self.batch_size,
            device=self.device,
        )
        h, z = feats[:, :d], feats[:, d:]
        out = {
            "knn_top1": knn_accuracy(
                h[self.bank], self.labels[self.bank], h[self.queries], self.labels[self.queries], k=self.k
            )
        }
        out.update(representation_stats(h, z))
        return out
