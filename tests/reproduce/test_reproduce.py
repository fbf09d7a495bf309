"""`compmod reproduce TABLE --scale S`: smoke runs a paper table's grid on Fashion-MNIST (what CI runs);
paper starts each cell from its preset (checked with a recording runner, and end to end on CIFAR-10 files)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
import yaml
from tests.helpers import requires_fmnist, run_cli, write_cifar10

from compmod.errors import ConfigError
from compmod.reproduce import SCALES, TABLES, reproduce


def test_tables_have_the_papers_rows_and_columns():
    lam = TABLES["lambda"].sweep_grid()
    assert lam.axes == [
        ("compmod.lambda1", [0.001, 0.01, 0.1, 1]),
        ("compmod.lambda2", [0.001, 0.01, 0.1, 1]),
    ]
    fusion = TABLES["fusion"].sweep_grid()
    assert [c["variant"] for c in fusion.cells()] == [
        *(f"mixup_{a}" for a in (0.1, 0.3, 0.5, 0.7, 0.9)),
        "concat_h",
        "concat_z",
        "no_bilevel",
    ]
    augment = TABLES["augment"].sweep_grid()
    assert len(augment.cells()) == 8 * 3
    assert augment.axes[0][1][0] == ["flip", "rotation"] and len(augment.axes[0][1][-1]) == 5


def test_every_table_resolves_to_valid_configs_at_every_scale(tmp_path):
    for table, spec in TABLES.items():
        grid = spec.sweep_grid()
        assert len(grid.cells()) >= 2, table
        for scale in SCALES:  # every cell's config is built and checked before the first cell runs
            with pytest.raises(RuntimeError, match="all cells validated"):
                reproduce(table, scale, tmp_path / f"{table}-{scale}", runner=_stop, log=lambda s: None)


def _stop(cfg, resume):
    raise RuntimeError("all cells validated")


def test_unknown_table_or_scale():
    with pytest.raises(ConfigError, match="unknown table 'table9'; choose one of: lambda, fusion"):
        reproduce("table9", "smoke")
    with pytest.raises(ConfigError, match="unknown scale 'huge'"):
        reproduce("lambda", "huge")


@requires_fmnist
@pytest.mark.slow
def test_reproduce_fusion_table_at_smoke_scale(tmp_path):
    done = run_cli(
        "reproduce", "fusion", "--scale", "smoke", "--out", str(tmp_path), "--set", "train.threads=1"
    )
    assert done.returncode == 0, done.stderr
    assert "Table 7" in done.stdout and "8 of 8 cells run" in done.stdout
    table = (tmp_path / "sweep.md").read_text()
    assert "Base config: compmod's defaults, with `train.progress=false" in table
    for variant in ("mixup_0.1", "mixup_0.9", "concat_h", "concat_z", "no_bilevel"):
        assert f"\n| {variant} |" in table
    saved = (tmp_path / "variant=no_bilevel" / "config.yaml").read_text()
    assert "name: byol" in saved and "mode: 'off'" in saved and "fusion: concat_h" in saved
    saved = (tmp_path / "variant=mixup_0.3" / "config.yaml").read_text()
    assert "fusion: mixup_h" in saved and "mixup_alpha: 0.3" in saved
    image = matplotlib.image.imread(tmp_path / "sweep.png")
    assert image.shape[0] > 50 and image.shape[1] > 50
    again = run_cli("reproduce", "fusion", "--scale", "smoke", "--out", str(tmp_path))
    assert again.returncode == 0 and "0 of 8 cells run" in again.stdout


def _record(seen):
    """A runner that keeps each cell's config and writes a results.json with the paper scale's metric."""

    def run(cfg, resume):
        seen[Path(cfg.train.run_dir).name] = cfg
        Path(cfg.train.run_dir).mkdir(parents=True)
        (Path(cfg.train.run_dir) / "results.json").write_text(json.dumps({"linear_top1": 50.0}))
        return {}

    return run


def _assert_from_preset(cfg, preset: Path) -> None:
    """Every value the preset file sets (read here as plain YAML, nested sections such as train.lars and
    augment.view1 too) is in the cell's config, but run_dir."""

    def check(have, values: dict, path: tuple[str, ...]) -> None:
        for key, value in values.items():
            if path + (key,) == ("train", "run_dir"):
                continue
            node = have.params if path == ("method",) and key != "name" else have  # a method's own parameters
            got = getattr(node, key)
            if isinstance(value, dict):
                check(got, value, path + (key,))
            else:
                assert (list(got) if isinstance(got, tuple) else got) == value, (preset, *path, key)

    check(cfg, yaml.safe_load(preset.read_text()), ())


def test_paper_scale_starts_each_cell_from_its_methods_preset(tmp_path):
    seen = {}
    result = reproduce("methods", "paper", tmp_path, runner=_record(seen), log=lambda s: None)
    assert result.table.parent == tmp_path and len(seen) == 6
    for method in ("simclr", "byol", "barlow_twins"):
        for on in (False, True):
            cfg = seen[f"name={method},enabled={str(on).lower()}"]
            _assert_from_preset(cfg, Path(f"configs/paper/cifar10/{method}{'+compmod' if on else ''}.yaml"))
            assert cfg.compmod.enabled is on and cfg.eval.pixel_knn is False
    assert "linear_top1" in result.table.read_text()
    assert "configs/paper/cifar10/<method>[+compmod].yaml" in result.table.read_text()


def test_paper_scale_keeps_the_tables_own_settings_over_the_preset(tmp_path):
    seen = {}
    reproduce("fusion", "paper", tmp_path / "f", runner=_record(seen), log=lambda s: None, dataset="stl10")
    byol = yaml.safe_load(Path("configs/paper/stl10/byol+compmod.yaml").read_text())
    for name, cfg in seen.items():
        assert cfg.data.name == "stl10" and cfg.method.name == "byol" and cfg.compmod.enabled, name
        assert cfg.train.lr == byol["train"]["lr"]
        assert cfg.method.params.proj_hidden_dim == byol["method"]["proj_hidden_dim"]
    assert seen["variant=mixup_0.7"].compmod.fusion == "mixup_h"
    assert seen["variant=mixup_0.7"].compmod.mixup_alpha == 0.7
    assert seen["variant=no_bilevel"].compmod.meta.mode == "off"
    seen = {}
    reproduce("lambda", "paper", tmp_path / "l", runner=_record(seen), log=lambda s: None)
    cfg = seen["lambda1=0.01,lambda2=1"]
    _assert_from_preset(cfg, Path("configs/paper/cifar10/simclr+compmod.yaml"))
    assert (cfg.compmod.lambda1, cfg.compmod.lambda2) == (0.01, 1)


def test_paper_scale_dataset_errors(tmp_path):
    with pytest.raises(ConfigError, match="dataset 'mnist'; choose one of: cifar10, cifar100, imagenet,"):
        reproduce("lambda", "paper", tmp_path, dataset="mnist")
    with pytest.raises(ConfigError, match="--dataset cifar10 applies to --scale paper only"):
        reproduce("lambda", "cpu", tmp_path, dataset="cifar10")
    with pytest.raises(ConfigError, match=r"no paper preset .*cifar10/mec\+compmod.yaml for this cell"):
        reproduce("fusion", "paper", tmp_path, ["method.name=mec"], runner=_stop, log=lambda s: None)


@pytest.mark.slow
def test_reproduce_at_paper_scale_trains_the_presets_on_cifar10_files(tmp_path):
    """The CLI end to end: Table 1's six cells from the CIFAR-10 presets (ResNet-18, their heads and
    optimisers) on a generated CIFAR-10 in its real pickle format, each for 2 steps, scored by the probe."""
    root = write_cifar10(tmp_path / "data", per_batch=4, test=10)
    small = ["train.max_steps=2", "train.batch_size=8", "eval.linear_epochs=1", "train.threads=1"]
    args = [a for s in [f"data.root={root}", "train.progress=false", *small] for a in ("--set", s)]
    out = tmp_path / "sweep"
    scale = ["--scale", "paper", "--dataset", "cifar10"]
    done = run_cli("reproduce", "methods", *scale, "--out", str(out), *args)
    assert done.returncode == 0, done.stderr
    assert "Table 1" in done.stdout and "6 of 6 cells run" in done.stdout
    for cell in ("name=byol,enabled=true", "name=barlow_twins,enabled=false"):
        results = json.loads((out / cell / "results.json").read_text())
        assert results["backbone"] == "resnet18" and results["dataset"] == "cifar10" and results["steps"] == 2
        assert 0.0 <= results["linear_top1"] <= 100.0
    assert "| simclr | " in (out / "sweep.md").read_text()
    assert matplotlib.image.imread(out / "sweep.png").shape[0] > 50
