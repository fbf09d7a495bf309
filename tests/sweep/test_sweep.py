"""`compmod sweep`: a real lambda1 x lambda2 grid of tiny runs -> every cell trained once, a markdown table
and a heatmap PNG; finished cells are skipped on a rerun; bad axes are clear errors."""

from __future__ import annotations

import json
import shutil

import matplotlib.image
import pytest
from tests.helpers import requires_fmnist, run_cli

from compmod.errors import ConfigError
from compmod.sweep import Grid, parse_axis, run_sweep
from compmod.sweep.grid import value_label

TINY = [
    "data.subset=32",
    "train.batch_size=16",
    "train.max_steps=1",
    "method.proj_hidden_dim=16",
    "method.proj_dim=8",
    "compmod.enabled=true",
    "eval.linear=false",
    "eval.pixel_knn=false",
    "eval.train_subset=200",
    "eval.test_subset=200",
    "train.progress=false",
    "train.threads=1",
]


def test_parse_axis_and_cells():
    assert parse_axis("compmod.lambda1=[0.1, 1, 10]") == ("compmod.lambda1", [0.1, 1, 10])
    assert parse_axis("augment.ops=[[crop, flip], [crop]]") == ("augment.ops", [["crop", "flip"], ["crop"]])
    grid = Grid.from_items(["compmod.fusion=[concat_h, mixup_h]", "compmod.meta.mode=[jvp, off]"])
    assert [grid.cell_name(c) for c in grid.cells()] == [
        "fusion=concat_h,mode=jvp",
        "fusion=concat_h,mode=off",
        "fusion=mixup_h,mode=jvp",
        "fusion=mixup_h,mode=off",
    ]
    assert Grid().overrides({"augment.ops": ["crop", "flip"], "compmod.lambda1": 0.5}) == [
        "augment.ops=[crop, flip]",
        "compmod.lambda1=0.5",
    ]
    assert value_label(["crop", "flip"]) == "crop+flip" and value_label(None) == "null"


def test_variants_axis():
    grid = Grid.from_variants(
        {"a": ("compmod.fusion=mixup_h",), "b": ("compmod.meta.mode=off",)}, "x.y=[1, 2]"
    )
    assert [grid.cell_name(c) for c in grid.cells()] == [
        "variant=a,y=1",
        "variant=a,y=2",
        "variant=b,y=1",
        "variant=b,y=2",
    ]
    assert grid.overrides({"variant": "b", "x.y": 2}) == ["compmod.meta.mode=off", "x.y=2"]
    with pytest.raises(ConfigError, match="sweep variant name 'a b'"):
        Grid.from_variants({"a b": ()})


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("compmod.lambda1", "must look like"),
        ("compmod.lambda1=0.5", "non-empty list"),
        ("compmod.lambda1=[]", "non-empty list"),
        ("compmod.lambda1=[1, 1]", "repeat"),
        ("compmod.lambda1=[1, [2", "not valid YAML"),
    ],
)
def test_bad_axis_is_a_clear_error(item, match):
    with pytest.raises(ConfigError, match=match):
        parse_axis(item)


def test_a_bad_value_in_any_cell_fails_before_anything_runs(tmp_path):
    grid = Grid.from_items(["compmod.fusion=[concat_h, concat_hh]"])
    with pytest.raises(ConfigError, match="concat_hh"):
        run_sweep(None, TINY, grid, tmp_path, runner=lambda cfg, resume: pytest.fail("ran a cell"))
    assert not any(tmp_path.iterdir())


@requires_fmnist
@pytest.mark.slow
def test_lambda_grid_runs_every_cell_once_and_resumes(tmp_path):
    grid = Grid.from_items(["compmod.lambda1=[0.5, 2]", "compmod.lambda2=[0.5, 2]"])
    first = run_sweep(None, TINY, grid, tmp_path, log=lambda s: None)
    assert sorted(first.ran) == sorted(grid.cell_name(c) for c in grid.cells())
    for cell in grid.cells():
        run_dir = tmp_path / grid.cell_name(cell)
        assert 0 <= json.loads((run_dir / "results.json").read_text())["knn_top1"] <= 100
        saved = (run_dir / "config.yaml").read_text()
        for key in ("lambda1", "lambda2"):
            assert f"{key}: {cell['compmod.' + key]}" in saved
    lines = first.table.read_text().splitlines()
    head = lines.index("| compmod.lambda1 \\ compmod.lambda2 | 0.5 | 2 |")
    for row, a in zip(lines[head + 2 : head + 4], (0.5, 2), strict=True):  # the 2-D table of knn_top1
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == str(a)
        for value, b in zip(cells[1:], (0.5, 2), strict=True):
            name = f"lambda1={a},lambda2={b}"
            assert value == f"{first.results[name]['knn_top1']:.2f}"
    image = matplotlib.image.imread(first.figure)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    # rerun: finished cells skipped; a cell without results (interrupted) is run again
    shutil.rmtree(tmp_path / "lambda1=2,lambda2=0.5")
    second = run_sweep(None, TINY, grid, tmp_path, log=lambda s: None)
    assert second.ran == ["lambda1=2,lambda2=0.5"]
    assert second.results["lambda1=0.5,lambda2=0.5"] == first.results["lambda1=0.5,lambda2=0.5"]


@requires_fmnist
@pytest.mark.slow
def test_cli_sweep_over_fusions(tmp_path):
    sets = [a for item in TINY for a in ("--set", item)]
    done = run_cli("sweep", *sets, "--grid", "compmod.fusion=[concat_h, mixup_h]", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "fusion=concat_h" in done.stdout and (tmp_path / "sweep.md").is_file()
    assert (tmp_path / "sweep.png").stat().st_size > 1000
