"""COCO detection transfer: the generated shapes data is valid COCO, perfect predictions score 100 AP,
the model is torchvision's Mask R-CNN R50-FPN with the exported backbone loaded, and an end-to-end run
returns the six metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from tests.helpers import run_cli
from torch import nn
from torchvision.models.detection import maskrcnn_resnet50_fpn

from compmod.errors import CheckpointError, DatasetNotFoundError
from compmod.models import build_backbone
from compmod.transfer import detect as detect_mod
from compmod.transfer.coco import CocoInstances, coco_ap, hflip, load_coco, to_coco_results
from compmod.transfer.detect import METRICS, lr_factor
from compmod.transfer.export_formats import torchvision_state_dict
from compmod.transfer.mask_rcnn import build_mask_rcnn, load_detection_backbone
from compmod.transfer.synthetic_coco import write_shapes_coco

# pycocotools 2.0.11 decodes through np.array(..., copy=False) on an object without the copy keyword
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_coco(tmp_path_factory.mktemp("shapes"), n_train=8, n_val=4, size=96, seed=0)


def _pretrained_looking(arch: str, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """An ImageNet-stem backbone whose BatchNorm statistics are those of `images` (ImageNet-normalised),
    as a pretrained backbone's are; exported in the torchvision format."""
    torch.manual_seed(0)
    backbone, _ = build_backbone(arch, 3, cifar_stem=False)
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        backbone.train()((images - mean[:, None, None]) / std[:, None, None])
    return torchvision_state_dict(backbone.eval())


def test_lr_factor_is_detectron2_1x_at_full_length_and_scales() -> None:
    assert lr_factor(0, 90_000, 1000) == pytest.approx(0.001)
    assert lr_factor(500, 90_000, 1000) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(1000, 90_000, 1000) == lr_factor(59_999, 90_000, 1000) == 1.0
    assert lr_factor(60_000, 90_000, 1000) == pytest.approx(0.1)
    assert lr_factor(80_000, 90_000, 1000) == pytest.approx(0.01)
    assert lr_factor(600, 900, 10) == pytest.approx(0.1) and lr_factor(599, 900, 10) == 1.0


def test_shapes_dataset_is_valid_coco(shapes: Path) -> None:
    coco, image_dir = load_coco(shapes, "train")
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["rectangle", "ellipse", "triangle"]
    data = CocoInstances(coco, image_dir)
    assert len(data) == 8
    for i in range(len(data)):
        image, target = data[i]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=data.ids[i]))
        assert image.shape == (3, 96, 96) and image.min() >= 0 and image.max() <= 1
        assert len(anns) == len(target["boxes"]) >= 1 and all(a["iscrowd"] == 0 for a in anns)
        for a, box, mask in zip(anns, target["boxes"], target["masks"], strict=True):
            assert mask.sum() == a["area"] > 0
            ys, xs = np.nonzero(mask.numpy())
            x0, y0, x1, y1 = box.tolist()
            assert x0 - 1 <= xs.min() and xs.max() <= x1 and y0 - 1 <= ys.min() and ys.max() <= y1
    assert set(torch.cat([data[i][1]["labels"] for i in range(len(data))]).tolist()) <= {1, 2, 3}


def test_rle_segmentations_give_the_polygon_masks(shapes: Path, tmp_path: Path) -> None:
    coco, image_dir = load_coco(shapes, "val")
    raw = json.loads((shapes / "annotations/instances_val.json").read_text())
    for a in raw["annotations"]:
        rle = coco.annToRLE(a)
        a["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val.json").write_text(json.dumps(raw))
    (tmp_path / "val").symlink_to(image_dir)
    poly, rle = CocoInstances(coco, image_dir), CocoInstances(*load_coco(tmp_path, "val"))
    for i in range(len(poly)):
        assert torch.equal(poly[i][1]["masks"], rle[i][1]["masks"])


def test_perfect_predictions_score_100_and_flips_are_consistent(shapes: Path) -> None:
    coco, image_dir = load_coco(shapes, "val")
    data = CocoInstances(coco, image_dir)
    results = []
    for i in range(len(data)):
        image, target = hflip(*hflip(*data[i]))  # flipping twice is the identity
        n = len(target["boxes"])
        out = {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(n)}
        out["masks"] = target["masks"][:, None].float()
        results += to_coco_results(out, int(target["image_id"]), data.cat_ids)
    assert coco_ap(coco, results, "bbox") == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0})
    assert coco_ap(coco, results, "segm") == pytest.approx({"AP": 100.0, "AP50": 100.0, "AP75": 100.0})
    assert coco_ap(coco, [], "segm") == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}

    image, target = data[0]
    flipped_image, flipped = hflip(image, target)
    m = mask_utils.encode(np.asfortranarray(flipped["masks"].numpy().transpose(1, 2, 0)))
    x, _, w, _ = mask_utils.toBbox(m)[0]
    assert flipped["boxes"][0, 0] <= x + 1 and x + w <= flipped["boxes"][0, 2] + 1
    assert torch.equal(flipped_image[..., 0], image[..., -1])


def test_missing_annotations_name_the_paths_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"instances_train\.json' is missing; expected <root>/"):
        load_coco(tmp_path, "train")


def test_mask_rcnn_is_torchvision_r50_fpn_with_frozen_bn_and_the_backbone_loaded() -> None:
    torch.manual_seed(0)
    model = build_mask_rcnn(4, "r50", trainable_layers=3, min_size=96, max_size=96)
    reference = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    want = {k: v.shape for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert shapes == want
    trainable = {k.split(".")[0] for k, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # FrozenBatchNorm2d holds buffers, no parameters

    sd = torchvision_state_dict(build_backbone("resnet50", 3, cifar_stem=False)[0])
    load_detection_backbone(model, sd, "r50")
    body = model.backbone.body.state_dict()
    assert body.keys() == {k for k in sd if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(body[k], sd[k]) for k in body)

    r18 = torchvision_state_dict(build_backbone("resnet18", 3, cifar_stem=False)[0])
    with pytest.raises(CheckpointError, match="are a torchvision resnet18, not the resnet50.*use arch='r18'"):
        load_detection_backbone(model, r18, "r50")
    cifar = build_backbone("resnet50", 3, cifar_stem=True)[0].state_dict()
    with pytest.raises(CheckpointError, match=r"conv1 is \(64, 3, 3, 3\): Mask R-CNN needs an RGB ImageNet"):
        load_detection_backbone(model, cifar, "r50")
    old_style = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # older torchvision
    load_detection_backbone(model, old_style, "r50")  # weight files have no BN counters


@pytest.mark.slow
def test_transfer_detect_r50_end_to_end(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = CocoInstances(*load_coco(shapes, "train"))
    sd = _pretrained_looking("resnet50", torch.stack([data[i][0] for i in range(len(data))]))
    torch.save(sd, tmp_path / "resnet50_torchvision.pth")
    seen: dict[str, torch.Tensor] = {}
    train = detect_mod.train_detector

    def spy(model, *args, **kwargs):  # the body's weights as training starts
        seen.update({k: v.clone() for k, v in model.backbone.body.state_dict().items()})
        return train(model, *args, **kwargs)

    monkeypatch.setattr(detect_mod, "train_detector", spy)
    results = detect_mod.transfer_detect(
        tmp_path / "resnet50_torchvision.pth",
        shapes,
        epochs=1,
        batch_size=2,
        min_size=96,
        max_size=96,
        device="cpu",
        out_dir=tmp_path / "out",
        progress=False,
    )
    assert seen.keys() == {k for k in sd if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(seen[k], sd[k]) for k in seen)
    for name in METRICS:
        assert math.isfinite(results[name]) and 0 <= results[name] <= 100, (name, results[name])
    assert (
        results["iterations"] == 4
        and results["arch"] == "r50"
        and all(map(math.isfinite, results["epoch_losses"]))
    )
    assert json.loads((tmp_path / "out/detect_results.json").read_text()) == results


def test_cli_transfer_detect_missing_data_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compmod.cli import main

    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "w.pth")
    argv = ["transfer", "detect", "--weights", str(tmp_path / "w.pth"), "--data", str(tmp_path)]
    assert main([*argv, "--out", str(tmp_path)]) == 2
    missing = str(tmp_path / "annotations/instances_train.json")
    assert capsys.readouterr().err.splitlines() == [
        f"compmod: error: COCO-format data: {missing!r} is missing; "
        "expected <root>/annotations/instances_train.json + <root>/train/*.png|jpg and "
        "<root>/annotations/instances_val.json + <root>/val/*.png|jpg"
    ]


@pytest.mark.slow
def test_cli_transfer_detect_r18_prints_and_writes_results(shapes: Path, tmp_path: Path) -> None:
    data = CocoInstances(*load_coco(shapes, "train"))
    torch.save(
        _pretrained_looking("resnet18", torch.stack([data[i][0] for i in range(4)])), tmp_path / "w.pth"
    )
    args = ["--epochs", "1", "--batch-size", "4", "--min-size", "64", "--max-size", "64", "--device", "cpu"]
    args += ["--workers", "1"]
    out = tmp_path / "out"
    proc = run_cli(
        "transfer",
        "detect",
        "--weights",
        str(tmp_path / "w.pth"),
        "--data",
        str(shapes),
        "--out",
        str(out),
        "--arch",
        "r18",
        *args,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)  # stdout holds the JSON alone; COCOeval's tables go to stderr
    assert results == json.loads((out / "detect_results.json").read_text())
    assert results["arch"] == "r18" and results["iterations"] == 2 and results["min_size"] == 64
    assert all(0 <= results[name] <= 100 for name in METRICS) and "COCO segm:" in proc.stderr
