"""A small COCO-format instance-segmentation dataset of coloured shapes, for tests and demos.

`write_shapes_coco(root, n_train, n_val, size, seed)` writes the layout `compmod.transfer.coco` reads::

    root/annotations/instances_train.json   root/train/000001.png ...
    root/annotations/instances_val.json     root/val/000001.png ...

Each ``size`` x ``size`` image has a noisy background of a random colour and 1-3 non-overlapping shapes
of random colours: rotated rectangles (category 1, aspect 0.45-0.95), ellipses (2, 32-gons) and
triangles (3). Annotations are the exact polygons; each shape is painted through pycocotools'
rasterisation of its own polygon, so image and mask agree pixel for pixel, ``area`` is that mask's area,
``bbox`` the polygon's extent, and ``iscrowd`` is 0. Deterministic in ``seed``. Needs pycocotools
(the ``detection`` extra).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from compmod.transfer.coco import require_pycocotools

CATEGORIES = ({"id": 1, "name": "rectangle"}, {"id": 2, "name": "ellipse"}, {"id": 3, "name": "triangle"})


def _polygon(cat: int, cx: float, cy: float, r: float, rng: np.random.Generator) -> np.ndarray:
    """(k, 2) vertices (x, y) of a shape of category `cat` centred at (cx, cy) within radius r."""
    angle = rng.uniform(0, math.pi)
    if cat == 1:  # rectangle, aspect 0.5-1, rotated
        a, b = r * 0.95, r * rng.uniform(0.45, 0.95)
        pts = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
    elif cat == 2:  # ellipse as a 32-gon
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        pts = np.stack([r * np.cos(t), r * rng.uniform(0.45, 0.9) * np.sin(t)], 1)
    else:  # triangle with jittered vertices
        t = np.array([0.0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.3, 0.3, 3)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T + [cx, cy]


def _image(size: int, image_id: int, first_ann: int, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """One (size, size, 3) uint8 image and its annotations (ids from `first_ann`)."""
    _, _, mask_utils = require_pycocotools()
    bg = rng.uniform(30, 225, 3)
    img = np.clip(bg + rng.normal(0, 12, (size, size, 3)), 0, 255)
    boxes: list[tuple[float, float, float, float]] = []
    anns: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(50):
            r = rng.uniform(size / 9, size / 4.5)
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            cat = int(rng.integers(1, 4))
            pts = np.clip(_polygon(cat, cx, cy, r, rng), 0.5, size - 0.5).round(2)
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            if all(x0 > b[2] + 2 or x1 < b[0] - 2 or y0 > b[3] + 2 or y1 < b[1] - 2 for b in boxes):
                break
        else:
            continue  # no free place left
        boxes.append((x0, y0, x1, y1))
        poly = [float(v) for v in pts.reshape(-1)]
        rle = mask_utils.merge(mask_utils.frPyObjects([poly], size, size))
        mask = mask_utils.decode(rle).astype(bool)
        colour = (bg + rng.choice([-1, 1], 3) * rng.uniform(60, 120, 3)) % 256
        img[mask] = np.clip(colour + rng.normal(0, 6, (int(mask.sum()), 3)), 0, 255)
        anns.append(
            {
                "id": first_ann + len(anns),
                "image_id": image_id,
                "category_id": cat,
                "segmentation": [poly],
                "area": float(mask_utils.area(rle)),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "iscrowd": 0,
            }
        )
    return img.astype(np.uint8), anns


def write_shapes_coco(
    root: str | Path, n_train: int = 16, n_val: int = 8, size: int = 96, seed: int = 0
) -> Path:
    """Write the shapes dataset (module docstring) under `root`; returns `root`."""
    if size < 32:
        raise ValueError(f"size must be >= 32 px, got {size}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, n + 1):
            img, anns = _image(size, image_id, len(annotations) + 1, rng)
            name = f"{image_id:06d}.png"
            Image.fromarray(img).save(root / split / name)
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
            annotations += anns
        coco = {
            "info": {"description": f"compmod synthetic shapes ({split})", "version": "1.0"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": [{**c, "supercategory": "shape"} for c in CATEGORIES],
        }
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root
