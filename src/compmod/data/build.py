"""`build_dataset`: the one place that turns a `Config` into a dataset split (training, evaluation,
`compmod prepare-data` and the reports all load through it)."""

from __future__ import annotations

from compmod.config.schema import Config
from compmod.data.datasets import ImageDataset, load_dataset
from compmod.errors import ConfigError


def build_dataset(cfg: Config, split: str, prepare: bool = True, workers: int = 1) -> ImageDataset:
    """Load `split` ("pretrain", "train" or "test"); `data.subset`, `eval.train_subset` and
    `eval.test_subset` keep the first N images of each. `prepare`, `workers`: whether a missing prepared
    store (imagenet, imagenet100) may be decoded now, and by how many processes."""
    d = cfg.data
    ds = load_dataset(
        d.name,
        split,
        root=d.root,
        image_size=d.image_size,
        channels=d.channels,
        holdout_fraction=d.holdout_fraction,
        seed=cfg.train.seed,
        on_bad_image=d.on_bad_image,
        store_side=d.store_side,
        store_dir=d.store_dir,
        prepare=prepare,
        workers=workers,
    )
    n = {"pretrain": d.subset, "train": cfg.eval.train_subset, "test": cfg.eval.test_subset}[split]
    if split == "pretrain" and n is not None and n > len(ds):  # pretraining on fewer images than asked
        raise ConfigError(
            f"config key data.subset: {n} is not accepted; the {split} split of {d.name} holds only "
            f"{len(ds)} images (expected null or at most {len(ds)})"
        )
    if n is not None and n < len(ds):
        ds.images, ds.labels = ds.images[:n].contiguous(), ds.labels[:n].contiguous()
        ds.variable = ds.variable.subset(n) if ds.variable is not None else None
    return ds
