"""`engine.feed`: crops of a prepared store's images at their own sizes, drawn ahead by a thread, equal the
crops of the whole images; every batch's draw depends on (seed, epoch, batch) alone."""

from __future__ import annotations

import pytest
import torch

from compmod.config.augment import ViewAugment
from compmod.data.augment import BatchAugment
from compmod.data.datasets import load_dataset
from compmod.data.datasets.synthetic import write_imagenet
from compmod.engine.feed import StoreFeed, batch_generator


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory):
    root = write_imagenet(tmp_path_factory.mktemp("in") / "imagenet", classes=2, train=8, val=1, corrupt=0)
    return load_dataset("imagenet", "pretrain", root=str(root), image_size=24, store_dir=str(root / "s"))


def _views(rotation: float = 0.0) -> list[BatchAugment]:
    # the SimCLR view of ImageNet (crop 0.08-1, 3/4-4/3, flip, jitter, greyscale, blur), with rotation
    view = ViewAugment(blur_prob=0.5, rotation_prob=0.5 if rotation else 0.0, rotation_degrees=rotation)
    return [BatchAugment(view, 24, (0.5,) * 3, (0.25,) * 3) for _ in range(2)]


@pytest.mark.parametrize("seed", [3, 11, 29])  # several draws: crops at the edges, up- and downsampled
@pytest.mark.parametrize("rotation", [0.0, 30.0])
def test_a_crop_of_the_canvas_is_the_crop_of_the_whole_image(stored, rotation: float, seed: int) -> None:
    images = stored.variable
    views = _views(rotation)
    feed = StoreFeed(images, views, slice(0, 8), torch.device("cpu"), seed=seed)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    (x1, x2), = list(feed.epoch(order, 0, range(1), 8))  # fmt: skip
    g = batch_generator(seed, 0, 0)
    idx = order[:8]
    sizes = images.sizes[idx]
    for view, got in zip(views, (x1, x2), strict=True):
        p = view.sample(8, sizes[:, 0], sizes[:, 1], g)
        for j in range(8):  # one image at a time, at its own size, with its own parameters
            whole = torch.from_numpy(images.image(int(idx[j])).copy())[None]
            want = view.apply(whole, p.rows(slice(j, j + 1)))
            # the same bilinear taps at coordinates shifted by whole pixels, normalised to another size:
            # fp32 rounding of the grid (6e-8 relative, on images of ~300 px) moves a tap by <= 3e-5 px,
            # which changes a value in [0, 1] by at most 3e-5 (a full-range step per pixel); dividing by
            # std 0.25 makes it 1.2e-4 (measured: 7e-6)
            assert torch.allclose(got[j], want[0], atol=2e-4), (j, (got[j] - want[0]).abs().max())
    assert x1.shape == (8, 3, 24, 24) and not torch.equal(x1, x2)


def test_batches_depend_on_seed_epoch_and_batch_only(stored) -> None:
    images = stored.variable
    feed = StoreFeed(images, _views(), slice(0, 4), torch.device("cpu"), seed=1)
    order = torch.arange(len(images))
    full = list(feed.epoch(order, 2, range(4), 4))
    resumed = list(feed.epoch(order, 2, range(2, 4), 4))  # a run resumed at batch 2
    for a, b in zip(full[2:], resumed, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    other = next(iter(feed.epoch(order, 3, range(1), 4)))
    assert not torch.equal(other[0], full[0][0])
    # two ranks' halves of the global batch are the rows of the one-process batch
    halves = [
        StoreFeed(images, _views(), rows, torch.device("cpu"), 1) for rows in (slice(0, 2), slice(2, 4))
    ]
    parts = [next(iter(h.epoch(order, 2, range(1), 4))) for h in halves]
    # canvases of other sizes: the tolerance of the crop test above
    assert torch.allclose(torch.cat([parts[0][0], parts[1][0]]), full[0][0], atol=2e-4)


def test_an_error_in_the_reading_thread_reaches_the_training_thread(stored, monkeypatch) -> None:
    feed = StoreFeed(stored.variable, _views(), slice(0, 4), torch.device("cpu"), seed=1)

    def broken(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(stored.variable, "region", broken)
    with pytest.raises(OSError, match="disk gone"):
        list(feed.epoch(torch.arange(8), 0, range(2), 4))


def test_stopping_early_stops_the_thread(stored) -> None:
    import threading

    feed = StoreFeed(stored.variable, _views(), slice(0, 2), torch.device("cpu"), seed=1)
    it = feed.epoch(torch.arange(8), 0, range(4), 2)
    next(it)
    it.close()
    assert not any(t.name == "compmod-store-feed" for t in threading.enumerate())


def test_the_run_seed_epoch_and_batch_each_change_the_draws() -> None:
    # torch's CPU generator keeps 32 bits of a seed: a seed packed above them would be lost
    draws = {
        key: torch.rand(4, generator=batch_generator(*key))
        for key in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    }
    assert all(not torch.equal(draws[(0, 0, 0)], d) for key, d in draws.items() if key != (0, 0, 0))
    assert torch.equal(
        torch.rand(4, generator=batch_generator(7, 3, 9)), torch.rand(4, generator=batch_generator(7, 3, 9))
    )
