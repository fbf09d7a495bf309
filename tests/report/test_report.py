"""`compmod.report` on two tiny real runs (plain SimCLR and SimCLR + CompMod), plus unit tests of the
run reader and the tables on hand-written run directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from tests.helpers import built_once, requires_fmnist

from compmod.config import load_config
from compmod.engine.run import train_and_evaluate
from compmod.errors import CheckpointError, DataError
from compmod.report import load_run, write_report
from compmod.report.curves import (
    CONTROLS_PANEL,
    LOSS_PANEL,
    TERMS_PANEL,
    epoch_figure,
    loss_figure,
    panel_titles,
)
from compmod.report.runs import display_names
from compmod.report.table import comparison_table, markdown_table
from compmod.report.tsne import embed_run, tsne_coords

SMALL = [
    "data.subset=64",
    "train.batch_size=16",
    "train.epochs=2",
    "method.proj_hidden_dim=64",
    "method.proj_dim=32",
    "train.progress=false",
    "train.threads=1",
    "eval.enabled=true",
    "eval.train_subset=500",
    "eval.linear=false",
    "eval.pixel_knn=false",
    "eval.batch_size=128",  # eval extracts features of all 10k test images: smaller batches run faster on CPU
    "eval.knn_weighted_k=20",
    "eval.monitor_every=1",  # the Trainer's online monitor: epoch_knn_top1, epoch_h_effective_rank, ...
    "eval.monitor_images=200",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    def train(root: Path) -> None:
        for name, extra in (("plain", []), ("compmod", ["compmod.enabled=true"])):
            train_and_evaluate(load_config(None, [*SMALL, f"train.run_dir={root / name}", *extra]))

    root = built_once(tmp_path_factory, "report-runs", train)
    return {"plain": root / "plain", "compmod": root / "compmod"}


@pytest.fixture(scope="module")
def report(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    def write(out: Path) -> None:
        paths = write_report([runs["plain"], runs["compmod"]], out / "report", tsne_points=200)
        (out / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))

    out = built_once(tmp_path_factory, "report", write)
    return {k: Path(v) for k, v in json.loads((out / "paths.json").read_text()).items()}


@pytest.mark.slow
@requires_fmnist
def test_write_report_writes_every_png_and_each_decodes(report):
    expected = {"report", "loss:plain", "loss:compmod", "knn", "diagnostics", "tsne:plain", "tsne:compmod"}
    assert set(report) == expected
    for key, path in report.items():
        assert path.is_file() and path.stat().st_size > 0, key
        if key != "report":
            assert path.suffix == ".png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
            image = imread(path)
            assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50, key
            assert float(image[..., :3].std()) > 0, f"{key} is blank"


@pytest.mark.slow
@requires_fmnist
def test_report_md_holds_both_runs_and_links_every_png(report, runs):
    text = report["report"].read_text()
    results = {n: json.loads((runs[n] / "results.json").read_text()) for n in runs}
    rows = [line for line in text.splitlines() if line.startswith(("| plain |", "| compmod |"))]
    # the results table and the representation-diagnostics table each hold both runs
    assert len(rows) == 4
    assert any("| plain | simclr |" in r for r in rows) and any(
        "| compmod | simclr+compmod |" in r for r in rows
    )
    assert f"{results['plain']['knn_top1']:.2f}" in text and f"{results['compmod']['knn_top1']:.2f}" in text
    header = next(line for line in text.splitlines() if line.startswith("| run | method | dataset"))
    assert "knn_top1" in header and "final epoch loss" in header and "final knn_top1" in header
    assert "final h_effective_rank" in header and "final z_coding_rate" in header
    assert "| linear_top1 |" not in header  # eval.linear=false: no value in any run, column dropped
    assert "online_linear_top1" in header
    for key, path in report.items():
        if key != "report":
            assert f"]({path.name})" in text, key
    assert "h_effective_rank" in text and "z_coding_rate" in text


@pytest.mark.slow
@requires_fmnist
def test_loss_figure_has_compmod_panels_only_for_the_compmod_run(runs):
    compmod = loss_figure(load_run(runs["compmod"]))
    plain = loss_figure(load_run(runs["plain"]))
    assert panel_titles(compmod) == [LOSS_PANEL, TERMS_PANEL, CONTROLS_PANEL]
    assert panel_titles(plain) == [LOSS_PANEL]
    labels = [t.get_text() for t in compmod.axes[1].get_legend().get_texts()]
    assert labels == ["mcr", "comp"]


@pytest.mark.slow
@requires_fmnist
def test_epoch_figures_plot_the_monitor_keys_one_line_per_run(runs):
    loaded = [load_run(runs["plain"]), load_run(runs["compmod"])]
    diagnostics = [
        "epoch_h_effective_rank",
        "epoch_z_effective_rank",
        "epoch_h_coding_rate",
        "epoch_z_coding_rate",
    ]
    for run in loaded:
        assert run.accuracy_keys == ["epoch_knn_top1", "epoch_online_linear_top1"]
        assert sorted(run.diagnostic_keys) == sorted(diagnostics)
        assert run.epoch_series("epoch_knn_top1")[0] == [1, 2]
    fig = epoch_figure(loaded, ["plain", "compmod"], diagnostics, "diagnostics")
    assert panel_titles(fig) == [k.removeprefix("epoch_") for k in diagnostics]
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "simclr (plain)",
            "simclr+compmod (compmod)",
        ]


@pytest.mark.slow
@requires_fmnist
def test_embed_run_and_tsne_are_finite_and_deterministic(runs):
    emb = embed_run(runs["compmod"], n=120)
    assert emb.h.shape[0] == emb.z.shape[0] == emb.labels.shape[0] == 120
    assert emb.z.shape[1] == 32 and len(emb.classes) == 10
    assert torch.isfinite(emb.h).all() and torch.isfinite(emb.z).all()
    again = embed_run(runs["compmod"], n=120)
    assert torch.equal(emb.h, again.h) and torch.equal(emb.labels, again.labels)
    a = tsne_coords(emb.h, seed=0, max_iter=250)
    b = tsne_coords(emb.h, seed=0, max_iter=250)
    assert a.shape == (120, 2) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@requires_fmnist
def test_write_report_without_checkpoint_names_the_path(runs, tmp_path):
    run = tmp_path / "copy"
    run.mkdir()
    for f in ("config.yaml", "metrics.jsonl", "results.json"):
        (run / f).write_bytes((runs["plain"] / f).read_bytes())
    paths = write_report([run], tmp_path / "notsne", tsne=False)
    assert set(paths) == {"report", "loss:copy", "knn", "diagnostics"}
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*copy.*tsne=False"):
        write_report([run], tmp_path / "out")


# ---- fast unit tests on hand-written run directories -----------------------------------------------
def _write_run(
    path: Path, records: list[dict], results: dict | None = None, config: str | None = None
) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(config or "method:\n  name: byol\ncompmod:\n  enabled: true\n")
    lines = [json.dumps(r) for r in records]
    (path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 9, "lo')  # a torn last line
    if results is not None:
        (path / "results.json").write_text(json.dumps(results))
    return path


STEP = {"epoch": 1, "lr": 0.1, "loss": 2.0, "ssl": 2.5, "mcr": -0.5, "comp": -1.0, "lambda": 1e-3}
EPOCH = {"epoch_loss": 1.5, "epoch_ssl": 2.0, "epoch_time_s": 3.0, "images_per_s": 10.0}


def test_load_run_splits_step_and_epoch_records_and_classifies_keys(tmp_path):
    run = load_run(
        _write_run(
            tmp_path / "r",
            [
                {"step": 1, **STEP},
                {"step": 2, **STEP, "loss": 1.0},
                {"step": 2, "epoch": 1, **EPOCH},
                {
                    "step": 2,
                    "epoch": 1,
                    "epoch_knn_top1": 40.0,
                    "epoch_h_effective_rank": 3.0,
                    "epoch_online_linear_top1": 30.0,
                },
            ],
        )
    )
    assert [r["step"] for r in run.steps] == [1, 2] and len(run.epochs) == 1
    assert run.label == "byol+compmod" and run.results == {}
    assert run.loss_parts == ["loss", "ssl", "mcr", "comp", "lambda"]
    assert run.accuracy_keys == ["epoch_knn_top1", "epoch_online_linear_top1"]
    assert run.diagnostic_keys == ["epoch_h_effective_rank"]
    assert run.step_series("loss") == ([1, 2], [2.0, 1.0])
    assert run.last_epoch_value("epoch_knn_top1") == 40.0
    assert [ax.get_yscale() for ax in loss_figure(run).axes] == ["log", "linear", "log"]


def test_load_run_rejects_what_is_not_a_run(tmp_path):
    with pytest.raises(CheckpointError, match=r"'.*nowhere' is not a run directory"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty' is not a compmod run directory: .*config\.yaml"):
        load_run(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="not a compmod run directory"):
        write_report([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before every run is read
    bad = _write_run(tmp_path / "bad", [{"step": 1, **STEP}], config="- a list\n")
    with pytest.raises(DataError, match=r"config\.yaml' must hold a mapping"):
        load_run(bad)
    (bad / "config.yaml").write_text("method: {name: simclr}\n")
    (bad / "results.json").write_text("{not json")
    with pytest.raises(DataError, match=r"results\.json' is not valid JSON"):
        load_run(bad)


def test_comparison_table_formats_and_drops_empty_columns(tmp_path):
    a = _write_run(
        tmp_path / "x" / "seed0",
        [{"step": 4, **STEP}, {"step": 4, "epoch": 1, **EPOCH}],
        {
            "method": "simclr",
            "dataset": "fashion_mnist",
            "epochs": 1,
            "steps": 4,
            "knn_top1": 81.234,
            "semi_10pct_top1": 70,
            "semi_1pct_top1": 55.5,
        },
    )
    b = _write_run(tmp_path / "y" / "seed0", [{"step": 3, **STEP}, {"step": 3, "epoch": 1, **EPOCH}], {})
    runs = [load_run(a), load_run(b)]
    names = display_names(runs)
    assert names == ["x/seed0", "y/seed0"]
    lines = comparison_table(runs, names).splitlines()
    assert lines[0] == (
        "| run | method | dataset | epochs | steps | train time (s) | knn_top1 | semi_1pct_top1 "
        "| semi_10pct_top1 | final epoch loss |"
    )
    assert lines[1] == "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| x/seed0 | simclr | fashion_mnist | 1 | 4 | 3.00 | 81.23 | 55.50 | 70.00 | 1.50 |"
    assert lines[3] == "| y/seed0 | byol+compmod |  | 1 | 3 | 3.00 |  |  |  | 1.50 |"
    assert markdown_table(["a", "b"], [[1.0, None], [math.pi, None]]) == "| a |\n|---:|\n| 1.00 |\n| 3.14 |\n"
