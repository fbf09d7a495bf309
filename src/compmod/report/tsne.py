"""t-SNE maps of backbone features, and the features themselves re-extracted from a run's checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from compmod.errors import ConfigError
from compmod.report.curves import new_figure, save_figure


@dataclass(frozen=True)
class Embedding:
    """Frozen representations of `n` test images of a run.

    Attributes:
        h: float32 (n, D_h) backbone features, the ones kNN and the probe evaluate.
        z: float32 (n, D_z) their projections `method.projector(h)`.
        labels: int64 (n,) class indices.
        classes: class names; `classes[label]` names a label.
    """

    h: torch.Tensor
    z: torch.Tensor
    labels: torch.Tensor
    classes: list[str]


def tsne_coords(
    features: torch.Tensor | np.ndarray, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000
) -> np.ndarray:
    """2-D t-SNE (van der Maaten & Hinton 2008; scikit-learn's Barnes-Hut `TSNE`, init="pca",
    random_state=`seed`, `max_iter` >= 250 iterations) of the L2-normalised rows of `features` (N, D), the
    cosine geometry the kNN evaluation uses. The perplexity is capped at (N - 1) / 3 so that small N
    works. Returns float64 (N, 2); the same input and seed give the same map.
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError:  # pragma: no cover - the extra is installed wherever the tests run
        raise ConfigError(
            "the t-SNE of compmod report needs scikit-learn; install it with pip install 'compmod[report]' "
            "or report without it (tsne=False)"
        ) from None

    x = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, np.float64)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"t-SNE needs (N, D) features with N >= 4; got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    perplexity = min(perplexity, (x.shape[0] - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter)
    return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def tsne_figure(
    coords: np.ndarray, labels: torch.Tensor | np.ndarray, classes: Sequence[str], title: str
) -> Figure:
    """Scatter of `coords` (N, 2) coloured by class (tab10/tab20), legend with the class names;
    `title` (may hold a line break) goes above the panel."""
    labels = np.asarray(labels)
    fig = new_figure(1, size=(7.0, 6.0))
    ax = fig.axes[0]
    cmap = "tab10" if len(classes) <= 10 else "tab20"
    for c, name in enumerate(classes):
        mask = labels == c
        if mask.any():
            ax.scatter(coords[mask, 0], coords[mask, 1], s=6, alpha=0.8, label=name, color=_colour(cmap, c))
    ax.set_xticks([])
    ax.set_yticks([])
    fig.suptitle(title)
    ax.legend(fontsize="small", markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def save_tsne(
    features: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    title: str,
    seed: int = 0,
) -> tuple[Path, np.ndarray]:
    """t-SNE of `features` plotted by class to the PNG `path`; returns the path and the (N, 2) map."""
    coords = tsne_coords(features, seed)
    return save_figure(tsne_figure(coords, labels, classes, title), path), coords


def embed_run(
    run_dir: str | Path, n: int = 2000, device: torch.device | str = "cpu", seed: int = 0
) -> Embedding:
    """Rebuild the method of `run_dir` from `checkpoints/last.pt` and embed `n` test images with
    `method.embed` (h and z in one eval-mode pass, as the online monitor does).

    The images are a seeded random sample (sorted, so in dataset order) of the test split named by the
    run's config; they go through `eval_transform` with the pretraining mean/std stored in the checkpoint,
    as in the run's own evaluation. Missing checkpoint: CheckpointError naming its path.
    """
    from compmod.data.augment import eval_transform
    from compmod.data.build import build_dataset
    from compmod.engine.pretrained import load_pretrained
    from compmod.engine.run_dir import checkpoint_path
    from compmod.eval.features import extract_features

    if n < 1:
        raise ValueError(f"embed_run: n must be >= 1; got {n}")
    pre = load_pretrained(checkpoint_path(run_dir))
    cfg, size, mean, std = pre.cfg, pre.image_shape[1], pre.mean, pre.std
    test = build_dataset(cfg, "test")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    idx = order[: min(n, len(test))].sort().values
    device = torch.device(device)
    method = pre.method.to(device).eval()

    def transform(x: torch.Tensor) -> torch.Tensor:
        return eval_transform(x, size, mean, std)

    hz = extract_features(method.embed, test.images[idx], transform, cfg.eval.batch_size, device)
    h, z = hz[:, : method.feat_dim], hz[:, method.feat_dim :]
    return Embedding(h.contiguous(), z.contiguous(), test.labels[idx].clone(), list(test.classes))


def _colour(cmap: str, i: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    cm = colormaps[cmap]
    return cm(i % cm.N)
