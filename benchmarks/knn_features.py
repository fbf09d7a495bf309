"""Feature sets of the kNN benchmark: a seeded random projection of the pixels, and a trained encoder's.

* `projected_features`: Fashion-MNIST pixels scaled to [0, 1] and flattened (784), times a fixed Gaussian
  matrix (784, 512) with entries N(0, 1/784) drawn from `torch.Generator().manual_seed(0)`, then ReLU:
  d = 512, non-negative, close enough to the pixels that the 5-NN top-1 is a real accuracy (~85 %);
* `trained_features`: the backbone features (d = 512) of the demo preset (`configs/demo.yaml`: SimCLR +
  CompMod, small_cnn) trained for `ENCODER_EPOCHS` epoch(s) through the library's own API
  (`load_config` + `train_and_evaluate`, evaluation off) under `runs/bench-knn/encoder/`, then
  `extract_features` as `compmod.eval.protocol.evaluate` does it (`inference_encoder`: BatchNorm folded,
  eval.precision; eval transform, the checkpoint's mean and std). The checkpoint is trained on first use
  (a few minutes on 2 CPU cores) and reused afterwards; the features are cached beside it (`features.pt`,
  keyed by the checkpoint's step and `FEATURES_VERSION`). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from compmod.data.datasets.load import load_dataset

DIM = 512
SEED = 0
ENCODER_EPOCHS = 1
FEATURES_VERSION = 2  # 2: extracted as evaluation does since eval.precision (BatchNorm folded, bf16)
ROOT = Path(__file__).resolve().parent.parent
ENCODER_DIR = ROOT / "runs" / "bench-knn" / "encoder"
ENCODER_OVERRIDES = [
    f"train.epochs={ENCODER_EPOCHS}",
    "eval.enabled=false",
    "train.progress=false",
    f"train.run_dir={ENCODER_DIR}",
]

Data = tuple[Tensor, Tensor, Tensor, Tensor]  # train features, train labels, test features, test labels


def projected_features(images: Tensor, projection: Tensor) -> Tensor:
    """uint8 (N, C, H, W) -> float32 (N, d): relu((pixels / 255) @ projection)."""
    return torch.relu(images.reshape(images.shape[0], -1).float().div_(255) @ projection)


def random_projection(n_train: int, n_test: int) -> Data:
    """The first n_train / n_test Fashion-MNIST train / test images as d = 512 projected features."""
    train = load_dataset("fashion_mnist", "train")
    test = load_dataset("fashion_mnist", "test")
    pixels = train.images[0].numel()
    g = torch.Generator().manual_seed(SEED)
    projection = torch.randn(pixels, DIM, generator=g) / pixels**0.5
    return (
        projected_features(train.images[:n_train], projection),
        train.labels[:n_train].contiguous(),
        projected_features(test.images[:n_test], projection),
        test.labels[:n_test].contiguous(),
    )


def train_encoder() -> Path:
    """Train the demo preset for ENCODER_EPOCHS epoch(s) unless its checkpoint exists; its path."""
    checkpoint = ENCODER_DIR / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        from compmod.config import load_config
        from compmod.engine.run import train_and_evaluate

        print(f"training the benchmark encoder ({ENCODER_EPOCHS} epoch(s)) under {ENCODER_DIR}", flush=True)
        train_and_evaluate(load_config(ROOT / "configs" / "demo.yaml", ENCODER_OVERRIDES), overwrite=True)
    return checkpoint


def trained_features(n_train: int, n_test: int) -> Data:
    """The trained encoder's features of the first n_train / n_test train / test images, and labels."""
    checkpoint = train_encoder()
    cache = ENCODER_DIR / "features.pt"
    from compmod.engine.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    cached = torch.load(cache, weights_only=True) if cache.is_file() else None
    if cached is None or (cached["step"], cached.get("version")) != (state["step"], FEATURES_VERSION):
        cached = {"step": state["step"], "version": FEATURES_VERSION, **_extract(state)}
        torch.save(cached, cache)
    return (
        cached["train"][:n_train],
        cached["train_labels"][:n_train],
        cached["test"][:n_test],
        cached["test_labels"][:n_test],
    )


def _extract(state: dict) -> dict[str, Tensor]:
    """Backbone features of the full train and test splits, as the evaluation protocol extracts them."""
    from compmod.config.load import config_from_dict
    from compmod.data.augment import eval_transform
    from compmod.engine.builders import build_method
    from compmod.eval.features import extract_features
    from compmod.eval.inference import inference_encoder, resolve_precision

    cfg = config_from_dict(state["config"])
    c, h, _ = state["data"]["shape"]
    method = build_method(cfg, c, h)
    method.load_state_dict(state["model"])
    mean, std = tuple(state["data"]["mean"]), tuple(state["data"]["std"])
    cpu = torch.device("cpu")
    precision = resolve_precision(cfg.eval.precision, cpu)
    encode = inference_encoder(method.backbone, precision, cpu, cfg.train.channels_last)
    out = {}
    for split in ("train", "test"):
        data = load_dataset("fashion_mnist", split)
        size = data.images.shape[-1]
        out[split] = extract_features(
            encode, data.images, lambda x, s=size: eval_transform(x, s, mean, std), cfg.eval.batch_size
        )
        out[f"{split}_labels"] = data.labels.contiguous()
    return out
