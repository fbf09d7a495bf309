"""`two_parts`: generated images whose label lives in two parts that a crop rarely keeps together, to test
CompMod's premise (issue 16): augmentation removes label information from one view that the other keeps.

Each 32 x 32 grey image holds two 12 x 12 patterns at opposite corners (which diagonal, and which end of it
each pattern takes, are drawn per image, with a jitter of one pixel) over a flat dark background, each at
its own contrast (5-NN of the test split on the train split: a random-init small CNN's features get 91 % on
part A, 92 % on part B and 83 % on the pair; raw pixels 93 %, 96 % and 89 %). The background is flat on
purpose: with per-pixel noise (an earlier version, std 60) SimCLR told the images apart by their noise,
which both views share where they overlap, and learned nothing of the patterns (5-NN 26 % on the pair, below
random-init features), so the data tested that shortcut instead of the premise:

- part A, a grating: horizontal or vertical stripes, 2 or 4 cycles across the patch, random phase;
- part B, a shape: filled square, ring, plus or diagonal cross.

Each part has 4 classes, drawn independently; the label is their pair, `4 * a + b` (16 classes, named
"<grating>+<shape>"); `part_labels` splits it back. Every class is invariant under a horizontal flip, so
the standard crop + flip augmentation never changes the label. The patterns are 6 pixels apart: of
random-resized crops of area scale (0.3, 0.6), 63 % hold more than half of one pattern's pixels, 5 % more
than half of both (28 % with the usual (0.08, 1)), so the two views of an image often carry different
halves of its label. Nothing is read from disk; the splits are the same
on every machine (20,000 train images from seed 0, 4,000 test images from seed 1; `data.subset` and
`eval.test_subset` take fewer).

    compmod train --config configs/premise_two_parts.yaml
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compmod.data.datasets.base import LoadOptions, RawSplit, register_dataset

SIZE, PATCH = 32, 12
GRATINGS = ("horizontal-2", "horizontal-4", "vertical-2", "vertical-4")  # part A: orientation-cycles
SHAPES = ("square", "ring", "plus", "cross")  # part B
CLASSES = [f"{g}+{s}" for g in GRATINGS for s in SHAPES]
BACKGROUND = 24  # a flat background: per-pixel noise would let SSL tell images apart by their noise
NOISE = 0.0  # std of Gaussian pixel noise (none by default, see BACKGROUND)
CONTRAST = (0.2, 0.8)  # each pattern's contrast over the background, drawn per image and part
SPLITS = {"train": (20_000, 0), "pretrain": (20_000, 0), "test": (4_000, 1)}  # split -> (images, seed)
_CORNERS = np.array(
    [(1, 1), (1, SIZE - PATCH - 1), (SIZE - PATCH - 1, 1), (SIZE - PATCH - 1, SIZE - PATCH - 1)]
)


def part_labels(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint label's two parts: (grating class a, shape class b), each in [0, 4)."""
    return labels // len(SHAPES), labels % len(SHAPES)


def _shape_masks() -> np.ndarray:
    """(4, PATCH, PATCH) bool masks of SHAPES, each symmetric under a left-right flip."""
    y, x = np.mgrid[0:PATCH, 0:PATCH] - (PATCH - 1) / 2
    r = np.hypot(y, x)
    return np.stack(
        [
            (np.abs(y) <= 3.5) & (np.abs(x) <= 3.5),
            (r >= 3.2) & (r <= 5.2),
            (np.abs(y) <= 1) | (np.abs(x) <= 1),
            (np.abs(np.abs(y) - np.abs(x)) <= 1.0) & (r <= 6),
        ]
    )


def _gratings(classes: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """(n, PATCH, PATCH) float gratings in [18, 238] for GRATINGS classes."""
    y, x = np.mgrid[0:PATCH, 0:PATCH] / PATCH
    coord = np.where((classes < 2)[:, None, None], y, x)  # horizontal stripes vary along y
    cycles = np.where(classes % 2 == 0, 2.0, 4.0)[:, None, None]
    return 128 + 110 * np.sin(2 * np.pi * cycles * coord + phases[:, None, None])


def generate(
    n: int, seed: int, noise: float = NOISE, contrast: tuple[float, float] = CONTRAST
) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (n, 1, SIZE, SIZE) uint8 and their joint labels (n,) int64, drawn from `seed`. Each
    pattern is drawn at a contrast c ~ U(`contrast`) over the background (pixel 24 + c (p - 24)), then
    Gaussian noise of std `noise` is added to every pixel (none by default); `contrast=(1, 1)` gives the
    full-contrast layout (background 24, gratings in [18, 238], shapes at 250)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(GRATINGS), n), rng.integers(0, len(SHAPES), n)
    images = np.full((n, SIZE, SIZE), float(BACKGROUND))
    gratings = _gratings(a, rng.uniform(0, 2 * np.pi, n))
    shapes = _shape_masks()[b]
    corner = rng.integers(0, 4, n)
    jitter = rng.integers(-1, 2, (n, 2, 2))
    at_a, at_b = _CORNERS[corner] + jitter[:, 0], _CORNERS[3 - corner] + jitter[:, 1]  # opposite corners
    rows, cols, step = (
        np.arange(n)[:, None, None],
        np.arange(PATCH)[None, :, None],
        np.arange(PATCH)[None, None],
    )
    ya, xa = at_a[:, 0, None, None] + cols, at_a[:, 1, None, None] + step
    yb, xb = at_b[:, 0, None, None] + cols, at_b[:, 1, None, None] + step
    c = rng.uniform(contrast[0], contrast[1], (n, 2, 1, 1))
    images[rows, ya, xa] = 24 + c[:, 0] * (gratings - 24)
    images[rows, yb, xb] = np.where(shapes, 24 + c[:, 1] * (250.0 - 24), images[rows, yb, xb])
    images += rng.normal(0.0, 1.0, images.shape) * noise
    labels = a * len(SHAPES) + b
    return images.clip(0, 255).round().astype(np.uint8)[:, None], labels.astype(np.int64)


@register_dataset("two_parts", hint="two_parts is generated in memory and reads no files")
def load_two_parts(split: str, paths: list[Path], options: LoadOptions) -> RawSplit:
    """The generated split (`generate`); `paths` and the folder options do not apply."""
    n, seed = SPLITS[split]
    images, labels = generate(n, seed)
    return RawSplit(torch.from_numpy(images), torch.from_numpy(labels), list(CLASSES))
