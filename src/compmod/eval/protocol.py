"""The evaluation protocol of a pretrained encoder: kNN, linear probe, and raw-pixel kNN as a floor."""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from compmod.config.schema import Config
from compmod.data.augment import eval_transform
from compmod.eval.features import extract_features
from compmod.eval.knn import knn_accuracy, pixel_features
from compmod.eval.linear import linear_probe

EVALS = ("knn", "linear", "pixel_knn")


def evaluate(
    encode: Callable[[torch.Tensor], torch.Tensor],
    cfg: Config,
    device: torch.device,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    which: Collection[str] = EVALS,
    dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """Features of the labelled train split (kNN bank / probe training) and the full test split.

    Returns percentages: knn_top1 (k = eval.knn_k, majority vote, cosine), knn_weighted_top1
    (k = eval.knn_weighted_k, temperature-weighted), linear_top1/linear_top5, pixel_knn_top1.
    """
    from compmod.engine.builders import build_dataset

    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    num_classes = len(train.classes)
    size = train.images.shape[-1]
    e = cfg.eval
    out: dict[str, float] = {}
    if {"knn", "linear"} & set(which):

        def transform(x: torch.Tensor) -> torch.Tensor:
            return eval_transform(x, size, mean, std).to(dtype)

        f_train = extract_features(encode, train.images, transform, e.batch_size, device, cfg.train.progress)
        f_test = extract_features(encode, test.images, transform, e.batch_size, device, cfg.train.progress)
        if "knn" in which:
            out["knn_top1"] = knn_accuracy(f_train, train.labels, f_test, test.labels, k=e.knn_k)
            out["knn_weighted_top1"] = knn_accuracy(
                f_train,
                train.labels,
                f_test,
                test.labels,
                k=e.knn_weighted_k,
                weighted=True,
                temperature=e.knn_temperature,
            )
        if "linear" in which:
            out.update(
                linear_probe(
                    f_train,
                    train.labels,
                    f_test,
                    test.labels,
                    num_classes=num_classes,
                    epochs=e.linear_epochs,
                    lr=e.linear_lr,
                    batch_size=e.linear_batch_size,
                    seed=cfg.train.seed,
                    device=device,
                )
            )
    if "pixel_knn" in which:
        out["pixel_knn_top1"] = knn_accuracy(
            pixel_features(train.images), train.labels, pixel_features(test.images), test.labels, k=e.knn_k
        )
    out["eval_train_size"], out["eval_test_size"] = len(train), len(test)
    return out
