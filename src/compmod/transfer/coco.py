"""COCO-format detection data for Mask R-CNN, and COCO's box and mask AP (pycocotools).

Layout read (the ``instances_*`` files of COCO 2017, with the split names ``train`` and ``val``)::

    <root>/annotations/instances_train.json     <root>/train/<file_name>   (png or jpg)
    <root>/annotations/instances_val.json       <root>/val/<file_name>

Segmentations may be polygons or RLE (both decoded by pycocotools' ``annToMask``). Needs the
``detection`` extra (pycocotools).
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from compmod.errors import DataError, DatasetNotFoundError

LAYOUT = (
    "<root>/annotations/instances_train.json + <root>/train/*.png|jpg and "
    "<root>/annotations/instances_val.json + <root>/val/*.png|jpg"
)


def require_pycocotools() -> Any:
    try:
        from pycocotools import coco, cocoeval, mask
    except ImportError:
        raise DataError("COCO detection needs pycocotools: pip install 'compmod[detection]'") from None
    return coco, cocoeval, mask


def coco_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of `split` ("train" or "val") under `root`."""
    root = Path(root)
    return root / "annotations" / f"instances_{split}.json", root / split


def load_coco(root: str | Path, split: str) -> tuple[Any, Path]:
    """The pycocotools ``COCO`` index of `split` and its image folder.

    Raises:
        DatasetNotFoundError: the annotation file or the image folder is missing (names the expected layout).
        DataError: the annotation file is not valid COCO JSON, or the split has no annotated objects.
    """
    coco_mod, _, _ = require_pycocotools()
    ann_file, image_dir = coco_paths(root, split)
    for path in (ann_file, image_dir):
        if not path.exists():
            raise DatasetNotFoundError(f"COCO-format data: {str(path)!r} is missing; expected {LAYOUT}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco = coco_mod.COCO(str(ann_file))
    except Exception as e:  # JSONDecodeError, KeyError, AssertionError from pycocotools
        raise DataError(f"cannot read COCO annotations {str(ann_file)!r}: {type(e).__name__}: {e}") from None
    if not coco.getAnnIds() or not coco.getCatIds():
        raise DataError(f"{str(ann_file)!r} has no annotated objects or no categories")
    return coco, image_dir


class CocoInstances(torch.utils.data.Dataset):
    """Images and Mask R-CNN targets of one COCO-format split.

    Item i: (image (3, H, W) float in [0, 1], target) with target ``boxes`` (n, 4) float xyxy pixels,
    ``labels`` (n,) int64 in 1..K (category ids sorted, background 0), ``masks`` (n, H, W) uint8 and
    ``image_id``. Crowd objects (iscrowd=1) and boxes under 1 px are left out of the targets, as in
    torchvision's detection references; images without objects stay (negatives).
    """

    def __init__(self, coco: Any, image_dir: Path) -> None:
        self.coco, self.image_dir = coco, Path(image_dir)
        self.ids = sorted(coco.getImgIds())
        self.cat_ids = sorted(coco.getCatIds())
        self.label_of = {cat: i + 1 for i, cat in enumerate(self.cat_ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, image_id: int) -> torch.Tensor:
        path = self.image_dir / self.coco.imgs[image_id]["file_name"]
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except OSError as e:
            raise DataError(f"cannot read image {str(path)!r}: {e}") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image_id = self.ids[i]
        image = self.image(image_id)
        h, w = image.shape[-2:]
        anns = [
            a for a in self.coco.loadAnns(self.coco.getAnnIds(imgIds=image_id)) if not a.get("iscrowd", 0)
        ]
        boxes, labels, masks = [], [], []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            box = [max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)]
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            boxes.append(box)
            labels.append(self.label_of[a["category_id"]])
            mask = self.coco.annToMask(a)
            if mask.shape != (h, w):
                raise DataError(
                    f"annotation {a['id']} is for a {mask.shape[1]}x{mask.shape[0]} image (width x height in "
                    f"the annotation file), but image {image_id} is {w}x{h}"
                )
            masks.append(mask)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, h, w, dtype=torch.uint8),
            "image_id": torch.tensor(image_id),
        }
        return image, target


def hflip(
    image: torch.Tensor, target: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mirror an image (3, H, W) and its target left-right (boxes xyxy, masks (n, H, W))."""
    w = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


def to_coco_results(
    output: dict[str, torch.Tensor], image_id: int, cat_ids: list[int], mask_threshold: float = 0.5
) -> list[dict[str, Any]]:
    """Mask R-CNN's output for one image as COCO result dicts with ``bbox`` (xywh) and ``segmentation``
    (RLE of the mask probabilities > `mask_threshold`)."""
    _, _, mask_utils = require_pycocotools()
    boxes = output["boxes"].detach().cpu().numpy().astype(np.float64)
    scores = output["scores"].detach().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    masks = (output["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(masks) else []
    results = []
    for box, score, label, rle in zip(boxes, scores, labels, rles, strict=True):
        x0, y0, x1, y1 = box.tolist()
        rle["counts"] = rle["counts"].decode("ascii")
        results.append(
            {
                "image_id": image_id,
                "category_id": cat_ids[label - 1],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(score),
                "segmentation": rle,
            }
        )
    return results


def coco_ap(coco_gt: Any, results: list[dict[str, Any]], iou_type: str) -> dict[str, float]:
    """AP, AP50, AP75 in percent of `results` against `coco_gt` (``iou_type`` "bbox" or "segm").

    No detections at all scores 0. COCOeval's summary table goes to stderr (stdout stays clean for
    the CLI's JSON).
    """
    _, cocoeval, _ = require_pycocotools()
    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        ev = cocoeval.COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
    with contextlib.redirect_stdout(sys.stderr):
        print(f"COCO {iou_type}:")
        ev.summarize()
    ap, ap50, ap75 = (max(float(s), 0.0) * 100 for s in ev.stats[:3])  # -1: no ground truth in range
    return {"AP": ap, "AP50": ap50, "AP75": ap75}
