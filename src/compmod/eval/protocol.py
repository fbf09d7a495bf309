"""The evaluation protocol of a pretrained encoder: kNN, linear probe, and raw-pixel kNN as a floor; on
request, semi-supervised fine-tuning on a fraction of the labels."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from compmod.config.schema import Config
from compmod.data.augment import eval_transform
from compmod.data.build import build_dataset
from compmod.data.datasets import ImageDataset
from compmod.eval.diagnostics import embedding_stats
from compmod.eval.features import extract_features
from compmod.eval.inference import inference_encoder, resolve_precision
from compmod.eval.knn import knn_accuracies
from compmod.eval.linear import linear_probe
from compmod.eval.pixel_floor import pixel_knn_floor, pixel_sample
from compmod.eval.semi_supervised import evaluate_semi

if TYPE_CHECKING:
    from compmod.methods import SSLMethod

EVALS = ("knn", "linear", "pixel_knn")  # the default set
# run only when named: "semi" fine-tunes a copy of the backbone per label fraction; "diagnostics" measures the
# effective rank and coding rate of h and z on the test images (eval/diagnostics.py)
ON_REQUEST = ("semi", "diagnostics")


def selected(cfg: Config) -> list[str]:
    """The evaluations a run's config asks for: kNN always, the linear probe and the raw-pixel floor
    unless `eval.linear` / `eval.pixel_knn` is false, semi-supervised fine-tuning when `eval.semi`."""
    off = {"linear": not cfg.eval.linear, "pixel_knn": not cfg.eval.pixel_knn}
    return [w for w in EVALS if not off.get(w, False)] + (["semi"] if cfg.eval.semi else [])


def evaluate(
    encoder: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    cfg: Config,
    device: torch.device,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    which: Collection[str] = EVALS,
    dtype: torch.dtype = torch.float32,
    method: SSLMethod | None = None,
    index_dir: str | Path | None = None,
) -> dict[str, float | str]:
    """Features of the labelled train split (kNN bank / probe training) and the full test split, by
    `encoder` (the backbone; an `nn.Module` is evaluated as `inference_encoder` prepares it: BatchNorm
    folded, in the precision `eval.precision` resolves to, reported as eval_precision).

    Returns percentages: knn_top1 (k = eval.knn_k, majority vote, cosine), knn_weighted_top1
    (k = eval.knn_weighted_k, temperature-weighted), linear_top1/linear_top5, pixel_knn_top1, and for
    "semi" semi_<pct>pct_top1/top5 per eval.semi_fractions (`evaluate_semi`: it fine-tunes a copy of
    `method.backbone`, so `method` is required; its subset files go to `index_dir`, by default
    `<train.run_dir>/semi_indices`), and for "diagnostics" test_h_effective_rank, test_z_coding_rate, ...
    (`embedding_stats` of `method` on the test images).
    """
    unknown = sorted(set(which) - {*EVALS, *ON_REQUEST})
    if unknown:
        raise ValueError(f"evaluate: unknown protocol(s) {unknown}; choose from {EVALS + ON_REQUEST}")
    if {"semi", "diagnostics"} & set(which) and method is None:
        raise ValueError("evaluate: 'semi' and 'diagnostics' need the whole method (h and z); pass method=")

    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    size = train.images.shape[-1]
    e = cfg.eval
    out: dict[str, float | str] = {}

    def transform(x: torch.Tensor) -> torch.Tensor:
        return eval_transform(x, size, mean, std).to(dtype)

    if {"knn", "linear"} & set(which):
        out.update(_on_features(encoder, cfg, device, dtype, train, test, transform, which))
    if "pixel_knn" in which:
        out.update(_pixel_floor(cfg, train, test))
    if "diagnostics" in which:
        assert method is not None
        stats = embedding_stats(method, test.images, transform, e.batch_size, device)
        out.update({f"test_{k}": v for k, v in stats.items()})
    if "semi" in which:
        assert method is not None
        out.update(evaluate_semi(method, cfg, device, mean, std, index_dir=index_dir, train=train, test=test))
    out["eval_train_size"], out["eval_test_size"] = len(train), len(test)
    return out


def _on_features(
    encoder: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    cfg: Config,
    device: torch.device,
    dtype: torch.dtype,
    train: ImageDataset,
    test: ImageDataset,
    transform: Callable[[torch.Tensor], torch.Tensor],
    which: Collection[str],
) -> dict[str, float | str]:
    """kNN (both votes from one search: one GEMM per chunk of test features) and the linear probe on the
    encoder's features of both splits, extracted once."""
    e = cfg.eval
    precision = resolve_precision(e.precision, device, dtype)
    encode = inference_encoder(encoder, precision, device, cfg.train.channels_last)
    f_train = extract_features(encode, train.images, transform, e.batch_size, device, cfg.train.progress)
    f_test = extract_features(encode, test.images, transform, e.batch_size, device, cfg.train.progress)
    out: dict[str, float | str] = {"eval_precision": precision}
    if "knn" in which:
        votes = [(e.knn_k, False), (e.knn_weighted_k, True)]
        accs = knn_accuracies(f_train, train.labels, f_test, test.labels, votes, e.knn_temperature)
        out["knn_top1"], out["knn_weighted_top1"] = accs
    if "linear" in which:
        probe = linear_probe(
            f_train,
            train.labels,
            f_test,
            test.labels,
            num_classes=len(train.classes),
            epochs=e.linear_epochs,
            lr=e.linear_lr,
            batch_size=e.linear_batch_size,
            seed=cfg.train.seed,
            device=device,
        )
        out.update(probe)
    return out


def _pixel_floor(cfg: Config, train: ImageDataset, test: ImageDataset) -> dict[str, float | str]:
    """The raw-pixel kNN floor, on a bounded sample of a large split (named in the results when used)."""
    e = cfg.eval
    tr_x, tr_y, notes = pixel_sample(train.images, train.labels, e.pixel_knn_max_images, e.pixel_knn_size)
    te_x = pixel_sample(test.images, test.labels, None, e.pixel_knn_size)[0]
    out: dict[str, float | str] = {"pixel_knn_top1": pixel_knn_floor(tr_x, tr_y, te_x, test.labels, e.knn_k)}
    out.update({f"pixel_knn_{k}": v for k, v in notes.items()})
    return out
