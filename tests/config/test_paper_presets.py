"""Every paper preset (configs/paper/<dataset>/<method>[+compmod].yaml) holds, value for value, the recipe its
header names (tests/config/paper_recipes.py: source file and commit, GPU count, every compmod key), and trains
2 steps on a tiny copy of its dataset, written to tmp_path in the real on-disk format. The 2-step runs
override only sizes (steps, batch, the ImageNet presets' image size, ImageNet Barlow Twins' projector width),
never the method or backbone."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.config.paper_recipes import RECIPES, Preset, presets
from tests.dataset_writers import write_cifar100, write_imagenet, write_stl10, write_tiny_imagenet
from tests.helpers import write_cifar10

from compmod.config import load_config
from compmod.config.schema import Config
from compmod.data.datasets.imagenet import imagenet100_classes
from compmod.engine.trainer import Trainer, checkpoint_path

PRESETS = sorted(Path("configs/paper").rglob("*.yaml"))
DATASETS = ["cifar10", "cifar100", "stl10", "tiny_imagenet", "imagenet100", "imagenet"]
METHODS = ["simclr", "byol", "barlow_twins"]
# 224 px on CPU is too slow, and Tiny ImageNet's 64 px made its CompMod presets ~15 s each (measured: 3x the
# 32 px CIFAR presets); the resize path is the one those presets' data takes anyway. The others keep theirs.
SMALL_IMAGES = {"imagenet100": 32, "imagenet": 32, "tiny_imagenet": 32}
# Heads that alone make a 2-step CPU run slower than ~5 s are narrowed (measured: ImageNet Barlow Twins'
# 4096-4096-4096 projector, 9.5 s with CompMod's log-det on 4096-d z). Every other preset keeps its heads.
SMALL_HEADS = {("imagenet", "barlow_twins"): ["method.proj_hidden_dim=1024", "method.proj_dim=1024"]}


def _write(dataset: str, root: Path) -> Path:
    """A tiny copy of `dataset` under `root` (at least 16 pretraining images); returns the data.root."""
    if dataset == "cifar10":
        return write_cifar10(root, per_batch=4, test=10)
    if dataset == "cifar100":
        return write_cifar100(root)
    if dataset == "stl10":
        return write_stl10(root)
    if dataset == "tiny_imagenet":
        return write_tiny_imagenet(root, n_train=6).parent
    wnids = sorted(imagenet100_classes())[:2]  # ImageNet-100 keeps only its listed classes
    return write_imagenet(root / dataset, wnids, n_train=8)


def test_paper_presets_cover_every_dataset_and_method() -> None:
    names = {p.relative_to("configs/paper").as_posix() for p in PRESETS}
    assert names == {f"{d}/{m}{s}.yaml" for d in DATASETS for m in METHODS for s in ("", "+compmod")}
    assert names == {f"{p.name}.yaml" for p in TABLE}


def _id(preset: Path) -> str:
    return preset.relative_to("configs/paper").with_suffix("").as_posix()


TABLE = presets()


def _value(cfg: Config, key: str) -> Any:
    """The config value at dotted `key`; `method.x` is the method's own parameter x (but `method.name`)."""
    node: Any = cfg
    parts = key.split(".")
    if parts[0] == "method" and parts[1] != "name":
        node, parts = cfg.method.params, parts[1:]
    for part in parts:
        node = getattr(node, part)
    return node


def _header(path: Path) -> str:
    """The preset's leading comment block."""
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[: next(i for i, s in enumerate(lines) if not s.startswith("#"))])


@pytest.mark.parametrize("preset", TABLE, ids=lambda p: p.name)
def test_paper_preset_holds_its_recipe_value_for_value(preset: Preset) -> None:
    cfg = load_config(Path("configs/paper") / f"{preset.name}.yaml")
    wrong = {}
    for key, want in preset.values.items():
        have = _value(cfg, key)
        # exact: floats as written, and of the same type (1 is not 1.0, a list is not a tuple)
        if have != want or type(have) is not type(want):
            wrong[key] = (have, want)
    assert not wrong, f"{preset.name}: key: (preset, recipe table) {wrong}"


@pytest.mark.parametrize("preset", TABLE, ids=lambda p: p.name)
def test_paper_preset_header_names_its_source_and_gpus(preset: Preset) -> None:
    path = Path("configs/paper") / f"{preset.name}.yaml"
    header = _header(path)
    recipe = preset.recipe
    assert f"github.com/{recipe.source.repo}" in header
    assert f"#   {recipe.source.ref}\n#   {recipe.augmentations.ref}\n" in header
    sized = re.findall(r"Sized for (\d+) GPUs?\b", header)
    assert sized == [str(recipe.gpus)], sized
    assert f"{preset.values['train.batch_size'] // recipe.gpus} per GPU" in header
    assert "# Deviations (" in header and "\n#   - " in header
    # every augmentation value is written out in the file, per view (none comes from augment.preset)
    raw = yaml.safe_load(path.read_text())
    for key in preset.values:
        if key.startswith("augment.view"):
            _, view, name = key.split(".")
            assert name in raw["augment"][view], (preset.name, key)
    assert "preset" not in raw["augment"]


def test_compmod_presets_are_their_baselines_with_compmod_on() -> None:
    for base in (p for p in PRESETS if not p.stem.endswith("+compmod")):
        on = yaml.safe_load(base.with_name(f"{base.stem}+compmod.yaml").read_text())
        off = yaml.safe_load(base.read_text())
        assert on.pop("compmod") == {"enabled": True} and "compmod" not in off
        assert on["train"].pop("run_dir") == off["train"].pop("run_dir") + "+compmod"
        assert on == off, base


def test_docs_table_lists_every_preset_with_its_source() -> None:
    """docs/presets.md names every preset file and every recipe's source file@commit."""
    doc = Path("docs/presets.md").read_text()
    for preset in TABLE:
        assert f"`{preset.name}`" in doc, preset.name
    for recipe in RECIPES.values():
        assert recipe.source.ref in doc and recipe.augmentations.ref in doc, recipe.source.ref


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=_id)
def test_paper_preset_trains_two_steps(preset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPMOD_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_config(preset)
    dataset = cfg.data.name
    assert dataset == preset.parent.name and cfg.method.name == preset.stem.removesuffix("+compmod")
    assert cfg.compmod.enabled == preset.stem.endswith("+compmod")
    run_dir = tmp_path / "run"
    overrides = [
        f"data.root={_write(dataset, tmp_path / 'data')}",
        "train.max_steps=2",
        "train.batch_size=8",
        "eval.enabled=false",
        "train.progress=false",
        "train.threads=1",
        f"train.run_dir={run_dir}",
    ]
    if dataset in SMALL_IMAGES:
        overrides.append(f"data.image_size={SMALL_IMAGES[dataset]}")
    overrides += SMALL_HEADS.get((dataset, cfg.method.name), [])
    state = Trainer(load_config(preset, overrides)).fit()
    assert state.step == 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert checkpoint_path(run_dir).is_file()
