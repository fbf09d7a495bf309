"""The recipe behind every paper preset (configs/paper/<dataset>/<method>[+compmod].yaml): the source file and
commit it transcribes, the GPU count it was sized for, and the compmod value of every recipe key.

`test_paper_presets.py` loads each preset with `compmod.config.load_config` and compares every key listed here
with `==` (floats exactly as written); docs/presets.md is this table for people, with each deviation and why.

solo-learn conventions folded into the values (solo/args/pretrain.py and solo/methods/base.py, see
docs/presets.md): its YAML `optimizer.lr` is per 256 images, multiplied by batch_size x devices / 256 and by
accumulate_grad_batches; `optimizer.batch_size` is per device; unset scheduler keys take base.py's defaults
(warmup_epochs 10, warmup_start_lr 3e-5, min_lr 0, interval step); LARS momentum defaults to 0.9.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SOLO = "vturrisi/solo-learn"
SIMCLR = "google-research/simclr"


@dataclass(frozen=True)
class Source:
    """A file of a public repository at one commit."""

    repo: str
    path: str
    commit: str  # 40 hex digits

    @property
    def ref(self) -> str:
        """`path@commit`, as preset headers and docs/presets.md write it."""
        return f"{self.path}@{self.commit}"


@dataclass(frozen=True)
class Recipe:
    """One published recipe: where it is, where its per-view augmentations are, the GPUs it was run (or
    sized) on, and the compmod keys it fixes (dotted, `method.x` for the method's own parameters)."""

    source: Source
    augmentations: Source
    gpus: int
    values: Mapping[str, Any]


def _view(jitter: tuple[float, float, float, float], blur: float, solarize: float) -> dict[str, Any]:
    """One view's transform as solo-learn's augmentation YAML and SimCLR's data_util.py write it: random
    resized crop (0.08, 1) at torchvision's aspect range (3/4, 4/3), flip 0.5, colour jitter (brightness,
    contrast, saturation, hue) with p 0.8, greyscale 0.2, Gaussian blur sigma in [0.1, 2] with p `blur`,
    solarisation (PIL threshold 128 -> 0.5 on [0, 1]) with p `solarize`; no rotation, no cutout."""
    brightness, contrast, saturation, hue = jitter
    return {
        "crop": True,
        "crop_scale": (0.08, 1.0),
        "crop_ratio": (3 / 4, 4 / 3),
        "flip_prob": 0.5,
        "jitter_prob": 0.8,
        "brightness": brightness,
        "contrast": contrast,
        "saturation": saturation,
        "hue": hue,
        "grayscale_prob": 0.2,
        "blur_prob": blur,
        "blur_sigma": (0.1, 2.0),
        "rotation_prob": 0.0,
        "cutout_prob": 0.0,
        "solarize_prob": solarize,
        "solarize_threshold": 0.5,
    }


def _views(view1: dict[str, Any], view2: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"augment.ops": None}
    for name, view in (("view1", view1), ("view2", view2)):
        out.update({f"augment.{name}.{k}": v for k, v in view.items()})
    return out


STRONG_JITTER = (0.8, 0.8, 0.8, 0.2)  # colour-jitter strength 1 (SimCLR; solo-learn's symmetric.yaml)
BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)  # solo-learn's asymmetric.yaml (BYOL, Grill et al. 2020, Table 6)
# solo-learn scripts/pretrain/{cifar,imagenet-100}/augmentations/symmetric.yaml; SimCLR data_util.py
SYMMETRIC = _views(_view(STRONG_JITTER, 0.5, 0.0), _view(STRONG_JITTER, 0.5, 0.0))
# solo-learn scripts/pretrain/cifar/augmentations/asymmetric.yaml: no blur on 32 px images
CIFAR_ASYMMETRIC = _views(_view(BYOL_JITTER, 0.0, 0.0), _view(BYOL_JITTER, 0.0, 0.2))
# solo-learn scripts/pretrain/{imagenet-100,imagenet}/augmentations/asymmetric.yaml
IMAGENET_ASYMMETRIC = _views(_view(BYOL_JITTER, 1.0, 0.0), _view(BYOL_JITTER, 0.1, 0.2))


def _solo_train(eta: float, clip_lr: bool) -> dict[str, Any]:
    """What every solo-learn recipe shares: LARS (solo/utils/lars.py, momentum 0.9, eps 1e-8, biases and
    norms excluded), warmup_cosine per step from 3e-5 over 10 epochs to min_lr 0, sync_batchnorm; precision
    16-mixed becomes compmod's `auto` (bf16 where native; `fp16` is solo-learn's own setting on CUDA)."""
    return {
        "train.optimizer": "lars",
        "train.momentum": 0.9,
        "train.lars.rule": "solo",
        "train.lars.eta": eta,
        "train.lars.clip_lr": clip_lr,
        "train.lars.exclude_bias_n_norm": True,
        "train.lars.eps": 1e-8,
        "train.warmup_epochs": 10.0,
        "train.warmup_start_lr": 3e-5,
        "train.min_lr_ratio": 0.0,
        "train.precision": "auto",
        "train.sync_bn": True,
    }


SMALL_LARS = _solo_train(eta=0.02, clip_lr=True)  # cifar and imagenet-100 recipes
IMAGENET_LARS = _solo_train(eta=0.001, clip_lr=False)  # imagenet recipes


def _simclr(hidden: int, out: int, temperature: float) -> dict[str, Any]:
    return {
        "method.name": "simclr",
        "method.proj_hidden_dim": hidden,
        "method.proj_dim": out,
        "method.proj_layers": 2,
        "method.temperature": temperature,
    }


def _byol(hidden: int, out: int, pred_hidden: int) -> dict[str, Any]:
    # momentum.base_tau 0.99, final_tau 1.0 (compmod's cosine always ends at 1)
    return {
        "method.name": "byol",
        "method.proj_hidden_dim": hidden,
        "method.proj_dim": out,
        "method.proj_layers": 2,
        "method.pred_hidden_dim": pred_hidden,
        "method.ema_base": 0.99,
    }


def _barlow(hidden: int, out: int, scale_loss: float) -> dict[str, Any]:
    return {
        "method.name": "barlow_twins",
        "method.proj_hidden_dim": hidden,
        "method.proj_dim": out,
        "method.proj_layers": 3,
        "method.lambda_offdiag": 0.0051,
        "method.scale_loss": scale_loss,
    }


def _schedule(epochs: int, batch: int, lr: float, weight_decay: float) -> dict[str, Any]:
    return {
        "train.epochs": epochs,
        "train.batch_size": batch,
        "train.lr": lr,
        "train.weight_decay": weight_decay,
    }


def _solo(path: str, commit: str, augmentations: str, aug_commit: str) -> tuple[Source, Source]:
    return Source(SOLO, f"scripts/pretrain/{path}", commit), Source(
        SOLO, f"scripts/pretrain/{augmentations}", aug_commit
    )


RECIPES: dict[str, Recipe] = {
    # lr 0.4 x 256 x 1 GPU / 256 = 0.4
    "cifar/simclr": Recipe(
        *_solo(
            "cifar/simclr.yaml",
            "d1559571290b82ce48cf441db4d8cc26ce9493d7",
            "cifar/augmentations/symmetric.yaml",
            "8676d223e354682c78678a66d8cc2835af8ada92",
        ),
        gpus=1,
        values={
            **_simclr(2048, 256, 0.2),
            **_schedule(1000, 256, 0.4, 1e-4),
            **SMALL_LARS,
            **SYMMETRIC,
        },
    ),
    # lr 1.0 x 256 / 256 = 1.0
    "cifar/byol": Recipe(
        *_solo(
            "cifar/byol.yaml",
            "6286947bfe92c94d1c88d34d0a2e7ad0fe9f014c",
            "cifar/augmentations/asymmetric.yaml",
            "24322891ffa192357915e2809a5e38d2f98f48e2",
        ),
        gpus=1,
        values={
            **_byol(4096, 256, 4096),
            **_schedule(1000, 256, 1.0, 1e-5),
            **SMALL_LARS,
            **CIFAR_ASYMMETRIC,
        },
    ),
    # lr 0.3 x 256 / 256 = 0.3
    "cifar/barlow": Recipe(
        *_solo(
            "cifar/barlow.yaml",
            "78e2a670880f107381284fea376406eefdf71beb",
            "cifar/augmentations/asymmetric.yaml",
            "24322891ffa192357915e2809a5e38d2f98f48e2",
        ),
        gpus=1,
        values={
            **_barlow(2048, 2048, 0.1),
            **_schedule(1000, 256, 0.3, 1e-4),
            **SMALL_LARS,
            **CIFAR_ASYMMETRIC,
        },
    ),
    # batch 128 x 2 GPUs = 256; lr 0.3 x 256 / 256 = 0.3
    "imagenet-100/simclr": Recipe(
        *_solo(
            "imagenet-100/simclr.yaml",
            "6286947bfe92c94d1c88d34d0a2e7ad0fe9f014c",
            "imagenet-100/augmentations/symmetric.yaml",
            "6f228fd09f8fce6530053e0a50d0f2cdbc2d9085",
        ),
        gpus=2,
        values={
            **_simclr(4096, 512, 0.2),
            **_schedule(400, 256, 0.3, 1e-4),
            **SMALL_LARS,
            **SYMMETRIC,
        },
    ),
    # batch 128 x 2 = 256; lr 0.5 x 256 / 256 = 0.5; predictor hidden 8192 (cifar and imagenet: 4096)
    "imagenet-100/byol": Recipe(
        *_solo(
            "imagenet-100/byol.yaml",
            "c980e9e3f55342cec67da90045271d2511392562",
            "imagenet-100/augmentations/asymmetric.yaml",
            "6f228fd09f8fce6530053e0a50d0f2cdbc2d9085",
        ),
        gpus=2,
        values={
            **_byol(4096, 256, 8192),
            **_schedule(400, 256, 0.5, 1e-6),
            **SMALL_LARS,
            **IMAGENET_ASYMMETRIC,
        },
    ),
    # batch 128 x 2 = 256; lr 0.3 x 256 / 256 = 0.3
    "imagenet-100/barlow": Recipe(
        *_solo(
            "imagenet-100/barlow.yaml",
            "72c172b8099b3a9914b3258a29f26a4288120b69",
            "imagenet-100/augmentations/asymmetric.yaml",
            "6f228fd09f8fce6530053e0a50d0f2cdbc2d9085",
        ),
        gpus=2,
        values={
            **_barlow(2048, 2048, 0.1),
            **_schedule(400, 256, 0.3, 1e-4),
            **SMALL_LARS,
            **IMAGENET_ASYMMETRIC,
        },
    ),
    # batch 64 x 2 GPUs x 16 accumulated = 2048; lr 0.45 x (64 x 2 / 256) x 16 = 3.6 (= 0.45 x 2048 / 256);
    # warmup_start_lr 3e-5 x 16 = 4.8e-4 (base.py scales lr, min_lr and warmup_start_lr by the accumulation)
    "imagenet/byol": Recipe(
        *_solo(
            "imagenet/byol.yaml",
            "c980e9e3f55342cec67da90045271d2511392562",
            "imagenet/augmentations/asymmetric.yaml",
            "24322891ffa192357915e2809a5e38d2f98f48e2",
        ),
        gpus=2,
        values={
            **_byol(4096, 256, 4096),
            **_schedule(100, 2048, 3.6, 1e-6),
            **IMAGENET_LARS,
            "train.warmup_start_lr": 4.8e-4,
            **IMAGENET_ASYMMETRIC,
        },
    ),
    # batch 64 x 4 GPUs = 256; lr 0.8 x 256 / 256 = 0.8
    "imagenet/barlow": Recipe(
        *_solo(
            "imagenet/barlow.yaml",
            "e74719b9565cf2e25899a7d95f5d584005d9ab3d",
            "imagenet/augmentations/asymmetric.yaml",
            "24322891ffa192357915e2809a5e38d2f98f48e2",
        ),
        gpus=4,
        values={
            **_barlow(4096, 4096, 0.048),
            **_schedule(100, 256, 0.8, 1.5e-6),
            **IMAGENET_LARS,
            **IMAGENET_ASYMMETRIC,
        },
    ),
    # solo-learn has no imagenet/simclr.yaml: SimCLR's own ImageNet defaults (Chen et al. 2020, Sec. 2.3 and
    # App. B.1; run.py flags, the README's "default hyperparameters in our paper" command): batch 4096, LARS
    # (lars_optimizer.py: eta 0.001, trust ratio eta |w| / |g + wd w| = compmod's "fair" rule, batch norm and
    # biases excluded), lr 0.3 x 4096 / 256 = 4.8, weight decay 1e-6, 100 epochs, 10 warm-up epochs from 0,
    # cosine to 0, temperature 0.1, head 2048-2048-128, global BN. Run on 32-128 TPU v3 cores; sized here
    # for 16 GPUs (256 per GPU).
    "simclr/imagenet": Recipe(
        Source(SIMCLR, "run.py", "0075cc077e65a023def9cd955cf1fc2d8c53e7b8"),
        Source(SIMCLR, "data_util.py", "244e7128004c5fd3c7805cf3135c79baa6c3bb96"),
        gpus=16,
        values={
            **_simclr(2048, 128, 0.1),
            **_schedule(100, 4096, 4.8, 1e-6),
            "train.optimizer": "lars",
            "train.momentum": 0.9,
            "train.lars.rule": "fair",
            "train.lars.eta": 0.001,
            "train.lars.clip_lr": False,
            "train.lars.exclude_bias_n_norm": True,
            "train.warmup_epochs": 10.0,
            "train.warmup_start_lr": None,
            "train.min_lr_ratio": 0.0,
            "train.precision": "auto",
            "train.sync_bn": True,
            **SYMMETRIC,
        },
    ),
}


@dataclass(frozen=True)
class Dataset:
    """The dataset keys of a preset: image size, backbone and stem."""

    name: str
    image_size: int
    backbone: str
    cifar_stem: bool


DATASETS = {
    "cifar10": Dataset("cifar10", 32, "resnet18", True),
    "cifar100": Dataset("cifar100", 32, "resnet18", True),
    # solo-learn ships no STL-10 or Tiny ImageNet recipe: the CIFAR ones at their image size (a deviation)
    "stl10": Dataset("stl10", 96, "resnet18", False),
    "tiny_imagenet": Dataset("tiny_imagenet", 64, "resnet18", True),
    "imagenet100": Dataset("imagenet100", 224, "resnet18", False),
    "imagenet": Dataset("imagenet", 224, "resnet50", False),
}

RECIPE_OF = {  # (dataset, method) -> key of RECIPES
    **{
        (d, m): f"cifar/{m.removesuffix('_twins')}"
        for d in ("cifar10", "cifar100", "stl10", "tiny_imagenet")
        for m in ("simclr", "byol", "barlow_twins")
    },
    **{
        ("imagenet100", m): f"imagenet-100/{m.removesuffix('_twins')}"
        for m in ("simclr", "byol", "barlow_twins")
    },
    ("imagenet", "simclr"): "simclr/imagenet",
    ("imagenet", "byol"): "imagenet/byol",
    ("imagenet", "barlow_twins"): "imagenet/barlow",
}


@dataclass(frozen=True)
class Preset:
    """One file under configs/paper: its recipe and every compmod value it must hold."""

    name: str  # "<dataset>/<method>[+compmod]"
    recipe: Recipe
    values: dict[str, Any] = field(default_factory=dict)


def presets() -> list[Preset]:
    """Every paper preset (6 datasets x 3 methods x CompMod off/on) with its expected values."""
    out = []
    for dataset, ds in DATASETS.items():
        for method in ("simclr", "byol", "barlow_twins"):
            recipe = RECIPES[RECIPE_OF[(dataset, method)]]
            for compmod in (False, True):
                values = {
                    "data.name": ds.name,
                    "data.image_size": ds.image_size,
                    "model.backbone": ds.backbone,
                    "model.cifar_stem": ds.cifar_stem,
                    **recipe.values,
                    "compmod.enabled": compmod,
                }
                name = f"{dataset}/{method}{'+compmod' if compmod else ''}"
                out.append(Preset(name, recipe, values))
    return out
