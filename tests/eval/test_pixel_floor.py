"""The pixel kNN floor: the kNN rule on raw pixels, kept per (data, k), recomputed on any change."""

from __future__ import annotations

import pytest
import torch

from compmod.data.datasets.convert import resize_images
from compmod.eval import pixel_floor
from compmod.eval.features import pixel_features
from compmod.eval.knn import knn_accuracy


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (300, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127.5).long()  # a label the pixels carry
    return images[:240], labels[:240], images[240:], labels[240:]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPMOD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "pixel_knn"


@pytest.fixture
def computed(monkeypatch):
    """Counts the kNN runs of `pixel_knn_floor`."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs["k"])
        return knn_accuracy(*args, **kwargs)

    monkeypatch.setattr(pixel_floor, "knn_accuracy", counting)
    return calls


def test_the_floor_is_the_knn_accuracy_of_raw_pixels_and_is_computed_once(cache, computed):
    tr_x, tr_y, te_x, te_y = data()
    want = knn_accuracy(pixel_features(tr_x), tr_y, pixel_features(te_x), te_y, k=5)
    assert pixel_floor.pixel_knn_floor(tr_x, tr_y, te_x, te_y, 5) == want
    assert pixel_floor.pixel_knn_floor(tr_x, tr_y, te_x, te_y, 5) == want
    assert computed == [5] and len(list(cache.iterdir())) == 1


@pytest.mark.parametrize("change", ["k", "train pixel", "test label", "fewer test images"])
def test_any_change_of_data_or_k_is_measured_anew(cache, computed, change):
    tr_x, tr_y, te_x, te_y = data()
    pixel_floor.pixel_knn_floor(tr_x, tr_y, te_x, te_y, 5)
    k = 3 if change == "k" else 5
    if change == "train pixel":
        tr_x = tr_x.clone()
        tr_x[7, 0, 3, 3] ^= 1
    elif change == "test label":
        te_y = te_y.clone()
        te_y[0] = 1 - te_y[0]
    elif change == "fewer test images":
        te_x, te_y = te_x[:-1], te_y[:-1]
    got = pixel_floor.pixel_knn_floor(tr_x, tr_y, te_x, te_y, k)
    assert got == knn_accuracy(pixel_features(tr_x), tr_y, pixel_features(te_x), te_y, k=k)
    assert computed == [5, k] and len(list(cache.iterdir())) == 2


@pytest.mark.parametrize("content", ["", "{not json", '{"pixel_knn_top1": "85"}', '{"other": 1}'])
def test_a_corrupt_entry_is_recomputed(cache, computed, content):
    tr_x, tr_y, te_x, te_y = data()
    want = pixel_floor.pixel_knn_floor(tr_x, tr_y, te_x, te_y, 5)
    (entry,) = cache.iterdir()
    entry.write_text(content)
    assert pixel_floor.pixel_knn_floor(tr_x, tr_y, te_x, te_y, 5) == want
    assert computed == [5, 5]


def test_a_cache_folder_that_cannot_be_written_still_gives_the_floor(tmp_path, monkeypatch, computed, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("COMPMOD_CACHE_DIR", str(blocker / "cache"))  # below a file: mkdir fails
    tr_x, tr_y, te_x, te_y = data()
    want = knn_accuracy(pixel_features(tr_x), tr_y, pixel_features(te_x), te_y, k=5)
    assert pixel_floor.pixel_knn_floor(tr_x, tr_y, te_x, te_y, 5) == want
    assert "not cached" in caplog.text


def test_a_large_split_is_measured_on_a_bounded_sample() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 40, 40), dtype=torch.uint8, generator=g)
    labels = torch.arange(50) % 5
    same, same_labels, notes = pixel_floor.pixel_sample(images, labels, 100, 64)
    assert same is images and same_labels is labels and notes == {}  # small enough: untouched
    x, y, notes = pixel_floor.pixel_sample(images, labels, 10, 16)
    assert notes == {"train_images": 10, "size": 16} and x.shape == (10, 3, 16, 16)
    idx = torch.linspace(0, 49, 10).round().long()  # evenly spaced, first and last included
    assert torch.equal(y, labels[idx]) and idx[0] == 0 and idx[-1] == 49
    assert torch.equal(x, resize_images(images[idx], 16))  # the same resize, chunk by chunk
