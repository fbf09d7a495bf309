"""Features of a frozen encoder, and raw pixels as features (the "pixel kNN floor")."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


@torch.no_grad()
def extract_features(
    encoder: Callable[[Tensor], Tensor],
    images: Tensor,
    transform: Callable[[Tensor], Tensor],
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> Tensor:
    """Run a frozen encoder over a whole image tensor, batch by batch.

    Args:
        encoder: maps a float batch (B, ...) to features (B, d) (any trailing shape is flattened to d).
            An `nn.Module`, or the module owning a bound method such as `method.encode`, is put in eval
            mode for the pass; afterwards every submodule gets back its previous mode, also when the pass
            raises. Any other callable is responsible for its own mode.
        images: uint8 (N, C, H, W) on CPU.
        transform: maps a uint8 batch already on `device` to the float input of `encoder`
            (e.g. scaling to [0, 1] and normalising with the dataset statistics).
        batch_size: images per forward pass.
        device: where `transform` and `encoder` run. On CUDA each batch is copied from pinned memory with
            `non_blocking=True`, and features come back into a pinned CPU buffer the same way.
        progress: show a tqdm bar over batches.

    Returns:
        float32 (N, d) features on CPU, in the order of `images`.
    """
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (N, C, H, W); got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = images.shape[0]
    # Every submodule keeps its own flag: a partly frozen encoder (BatchNorm left in eval) comes back as is.
    owner = encoder if isinstance(encoder, nn.Module) else getattr(encoder, "__self__", None)
    modes = [(m, m.training) for m in owner.modules()] if isinstance(owner, nn.Module) else []
    if isinstance(owner, nn.Module):
        owner.eval()
    out: Tensor | None = None
    try:
        for start in tqdm(range(0, n, batch_size), desc="features", disable=not progress):
            batch = images[start : start + batch_size]
            if cuda:
                batch = batch.pin_memory()
            feats = encoder(transform(batch.to(device, non_blocking=cuda)))
            feats = feats.reshape(feats.shape[0], -1).float()
            if out is None:
                out = torch.empty((n, feats.shape[1]), dtype=torch.float32, pin_memory=cuda)
            out[start : start + feats.shape[0]].copy_(feats, non_blocking=cuda)
        if cuda:
            torch.cuda.synchronize(device)  # the last non_blocking copies into `out` must land first
    finally:
        for module, training in modes:
            module.training = training
    assert out is not None
    return out


def pixel_features(images: Tensor) -> Tensor:
    """Raw pixels as features: uint8 (N, C, H, W) -> float32 (N, C*H*W) in [0, 1], on the images' device.

    No centring or standardisation: cosine kNN (`knn_accuracy`) L2-normalises each row itself, so this is
    the plain "pixel kNN floor" that a learned representation should beat.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"pixel_features expects uint8 images; got {images.dtype}")
    if images.ndim < 2 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty batch (N, C, H, W); got shape {tuple(images.shape)}")
    return images.reshape(images.shape[0], -1).float().div_(255.0)


def check_feature_pair(train_feats: Tensor, test_feats: Tensor, who: str) -> None:
    """Raise ValueError unless both are non-empty 2-D (N, d) / (M, d) feature matrices of equal d."""
    if train_feats.ndim != 2 or test_feats.ndim != 2:
        raise ValueError(
            f"features must be 2-D (N, d); got train {tuple(train_feats.shape)}, "
            f"test {tuple(test_feats.shape)}"
        )
    n, m = train_feats.shape[0], test_feats.shape[0]
    if n == 0 or m == 0:
        raise ValueError(f"{who} needs non-empty train and test features; got N={n}, M={m}")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"feature dims differ: train has d={train_feats.shape[1]}, test has d={test_feats.shape[1]}"
        )
