"""`compmod prepare-data`: decode an image-file dataset once into its prepared store, ahead of any run.

Every rank of a later run (and every run with the same data keys) memory-maps the same store; under
torchrun no rank decodes (`compmod.data.datasets.store`).
"""

from __future__ import annotations

import time
from pathlib import Path

from compmod.config.schema import Config
from compmod.data.build import build_dataset
from compmod.data.datasets.imagenet import PREPARED_DATASETS
from compmod.errors import ConfigError


def prepare_data(cfg: Config, workers: int) -> list[str]:
    """Prepare (or find) the store of `cfg.data` with `workers` decoding processes; lines describing it."""
    if cfg.data.name not in PREPARED_DATASETS:
        raise ConfigError(
            f"data.name {cfg.data.name!r} is not accepted by compmod prepare-data; it prepares "
            f"{', '.join(PREPARED_DATASETS)} (the other datasets are read as they are)"
        )
    if workers < 1:
        raise ConfigError(f"--workers {workers} is not accepted; expected an integer >= 1")
    t0 = time.perf_counter()
    pretrain = build_dataset(cfg, "pretrain", workers=workers)
    test = build_dataset(cfg, "test", workers=workers)
    seconds = time.perf_counter() - t0
    variable = pretrain.variable
    assert variable is not None, "a prepared dataset's pretrain split holds its stored images"
    folder = Path(variable.data.filename).parent
    n, per_image = len(variable), variable.nbytes() / max(1, len(variable))
    eval_bytes = (len(pretrain) + len(test)) * pretrain.images[0].numel()
    return [
        f"store: {folder}",
        f"train: {n:,} images at shorter side {int(variable.sizes.min())} px, aspect ratio kept, "
        f"{per_image / 1024:.1f} KiB per image ({n * per_image / 2**30:.2f} GiB)",
        f"evaluation views: {len(pretrain):,} train + {len(test):,} val at {pretrain.images.shape[-1]} px "
        f"({eval_bytes / 2**30:.2f} GiB)",
        f"unreadable files left out: {len(pretrain.skipped) + len(test.skipped)}",
        f"ready in {seconds:.1f}s",
    ]
