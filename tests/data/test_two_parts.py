"""The generated two-part dataset of the premise experiment (compmod.data.datasets.two_parts)."""

from __future__ import annotations

import numpy as np
import torch

from compmod.data.augment_params import sample_crop_boxes
from compmod.data.datasets import load_dataset
from compmod.data.datasets.two_parts import (
    CLASSES,
    PATCH,
    SIZE,
    _gratings,
    _shape_masks,
    generate,
    part_labels,
)


def _quadrant(mask: np.ndarray) -> int:
    """0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right: where the mask's pixels lie."""
    y, x = np.nonzero(mask)
    return 2 * int(y.mean() >= SIZE / 2) + int(x.mean() >= SIZE / 2)


def test_splits_are_generated_the_same_every_time_with_16_balanced_classes() -> None:
    a, b = load_dataset("two_parts", "test"), load_dataset("two_parts", "test")
    assert (
        torch.equal(a.images, b.images)
        and a.images.shape == (4000, 1, 32, 32)
        and a.images.dtype == torch.uint8
    )
    assert a.classes == CLASSES and len(CLASSES) == 16
    counts = torch.bincount(a.labels, minlength=16)
    assert counts.min() > 4000 / 16 * 0.8 and counts.max() < 4000 / 16 * 1.2
    assert not torch.equal(load_dataset("two_parts", "train").images[:4000], a.images)  # another seed


def test_the_label_is_the_pair_of_part_classes_and_the_parts_sit_at_opposite_corners() -> None:
    images, labels = generate(200, seed=5, noise=0, contrast=(1, 1))
    grating, shape = part_labels(torch.from_numpy(labels))
    assert torch.equal(grating * 4 + shape, torch.from_numpy(labels))
    for img, s in zip(images[:, 0], shape.tolist(), strict=True):
        is_shape = img == 250
        is_grating = (img != 24) & ~is_shape  # the flat background is 24; gratings cross it rarely
        qa, qb = _quadrant(is_grating), _quadrant(is_shape)
        assert qa + qb == 3  # 0 <-> 3, 1 <-> 2: diagonally opposite
        assert is_shape.sum() == _shape_masks()[s].sum()  # the whole shape, nothing else at 250


def test_contrast_and_noise_are_drawn_after_the_layout() -> None:
    """The default images are the full-contrast layout at a lower contrast over a flat background; noise,
    when asked for, is added on top of the same layout."""
    full, labels = generate(300, seed=4, noise=0, contrast=(1, 1))
    default, same = generate(300, seed=4)
    noisy, _ = generate(300, seed=4, noise=30)
    assert np.array_equal(labels, same)
    background = full == 24
    assert (default[background] == 24).all() and (default[~background] != full[~background]).mean() > 0.5
    assert noisy[background].std() > 20
    assert np.abs(noisy.astype(float) - default).mean() > 10


def test_every_class_survives_a_horizontal_flip() -> None:
    """Shapes are mirror-symmetric; a flipped horizontal grating is itself, a flipped vertical one is the
    same grating at phase pi - phi - 2 pi c (PATCH - 1) / PATCH."""
    assert all(np.array_equal(m, m[:, ::-1]) for m in _shape_masks())
    phases = np.array([0.3, 1.7, 0.3, 1.7])
    classes = np.arange(4)
    flipped = _gratings(classes, phases)[:, :, ::-1]
    cycles = np.where(classes % 2 == 0, 2.0, 4.0)
    mirrored = np.pi - phases - 2 * np.pi * cycles * (PATCH - 1) / PATCH
    expected = np.where(
        (classes < 2)[:, None, None], _gratings(classes, phases), _gratings(classes, mirrored)
    )
    np.testing.assert_allclose(flipped, expected, atol=1e-9)


def test_the_study_crops_mostly_keep_one_part() -> None:
    """The premise by construction: with the study's crop scale (0.3, 0.6), most crops hold more than half
    of one pattern's pixels and few hold more than half of both (the standard (0.08, 1) crop: 0.28)."""
    images, _ = generate(1000, seed=3, noise=0, contrast=(1, 1))
    boxes = sample_crop_boxes(1000, SIZE, SIZE, (0.3, 0.6), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    kept_parts = []
    for img, (cx, cy, w, h) in zip(images[:, 0], boxes.tolist(), strict=True):
        inside = (np.abs(xx - cx) <= w / 2) & (np.abs(yy - cy) <= h / 2)
        shape = img == 250
        grating = (img != 24) & ~shape
        kept_parts.append(sum((part & inside).sum() / part.sum() > 0.5 for part in (grating, shape)))
    counts = np.bincount(kept_parts, minlength=3) / 1000
    assert counts[1] > 0.55 and counts[2] < 0.1, counts
