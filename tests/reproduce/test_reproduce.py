"""`compmod reproduce TABLE --scale smoke` runs a paper table's grid on Fashion-MNIST (what CI runs)."""

from __future__ import annotations

import matplotlib.image
import pytest
from tests.helpers import requires_fmnist, run_cli

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
