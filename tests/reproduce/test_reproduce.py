"""`compmod reproduce TABLE --scale smoke` runs a paper table's grid on Fashion-MNIST (what CI runs)."""

from __future__ import annotations

import matplotlib.image
import pytest
from tests.helpers import requires_fmnist, run_cli

from compmod.errors import ConfigError
from compmod.reproduce import SCALES, TABLES, reproduce
from compmod.sweep import Grid


def test_every_table_resolves_to_valid_configs_at_every_scale(tmp_path):
    for table, spec in TABLES.items():
        grid = Grid.from_items(list(spec.grid))
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
    assert "Table 7" in done.stdout and "6 of 6 cells run" in done.stdout
    table = (tmp_path / "sweep.md").read_text()
    assert "| compmod.fusion \\ compmod.meta.mode | jvp | off |" in table
    for fusion in ("concat_h", "concat_z", "mixup_h"):
        assert f"\n| {fusion} |" in table
    image = matplotlib.image.imread(tmp_path / "sweep.png")
    assert image.shape[0] > 50 and image.shape[1] > 50
    again = run_cli("reproduce", "fusion", "--scale", "smoke", "--out", str(tmp_path))
    assert again.returncode == 0 and "0 of 6 cells run" in again.stdout
