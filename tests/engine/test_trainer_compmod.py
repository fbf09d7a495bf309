"""CompMod through the real Trainer on Fashion-MNIST: exact == jvp after training, every method x fusion
x meta mode, the metrics it logs, its label, and checkpoint resume with the head and its optimiser."""

from __future__ import annotations

import json

import pytest
import torch
from tests.helpers import method_overrides, requires_fmnist

from compmod.config import load_config
from compmod.engine.builders import method_label
from compmod.engine.checkpoint import load_checkpoint
from compmod.engine.trainer import Trainer, checkpoint_path
from compmod.errors import CheckpointError
from compmod.methods import METHODS
from compmod.regularizers import FUSIONS

pytestmark = requires_fmnist

SMALL = [
    "train.batch_size=16",
    "method.proj_hidden_dim=32",
    "method.proj_dim=16",
    "train.progress=false",
    "eval.enabled=false",
    "train.threads=1",  # tiny batches; two spinning threads stall on a shared CPU
]


def _cfg(run_dir, method: str, *extra: str):
    return load_config(
        None, [*SMALL, *method_overrides(method), f"train.run_dir={run_dir}", "compmod.enabled=true", *extra]
    )


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


# ---- acceptance 2: exact and jvp train the same xi (and the same model) -------------------------------
@pytest.mark.parametrize("method", METHODS.names())
def test_exact_and_jvp_give_the_same_run_in_float64(tmp_path, method):
    runs = {}
    for mode in ("exact", "jvp"):
        cfg = _cfg(
            tmp_path / mode,
            method,
            "data.subset=40",
            "train.batch_size=8",
            "train.dtype=float64",
            "train.max_steps=5",
            f"compmod.meta.mode={mode}",
            # VICReg diverges under the default SGD at lr 0.3 (its weights reach 1e5); it trains with LARS
            *(["train.optimizer=lars"] if method == "vicreg" else []),
        )
        t = Trainer(cfg)
        start = _params(t.compmod.head)
        assert t.fit().step == 5
        runs[mode] = t
    exact, jvp = runs["exact"], runs["jvp"]
    assert next(exact.compmod.head.parameters()).dtype == torch.float64
    # xi really trained (so the comparison is not 0 == 0): moved by far more than the tolerance
    assert _max_abs_diff(start, _params(exact.compmod.head)) > 1e-3
    assert _max_abs_diff(_params(exact.compmod.head), _params(jvp.compmod.head)) <= 1e-8
    assert _max_abs_diff(_params(exact.method), _params(jvp.method)) <= 1e-8


# ---- acceptance 6: every method x fusion x meta mode trains, logs and is labelled ----------------------
@pytest.mark.parametrize("mode", ["jvp", "exact", "off"])
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_fusion_and_mode_trains_two_steps(tmp_path, method, fusion, mode):
    cfg = _cfg(
        tmp_path / "run",
        method,
        "data.subset=32",
        "train.max_steps=2",
        f"compmod.fusion={fusion}",
        f"compmod.meta.mode={mode}",
    )
    assert method_label(cfg) == f"{method}+compmod"
    t = Trainer(cfg)
    assert t.compmod is not None and t.compmod.mode == mode and t.compmod.fusion == fusion
    start = _params(t.compmod.head)
    assert t.fit().step == 2
    assert t.compmod.step == 2
    head = _params(t.compmod.head)
    assert any(not torch.equal(start[k], head[k]) for k in start if start[k].is_floating_point())
    records = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = records[0]
    assert first["step"] == 1
    for key in ("loss", "mcr", "comp", "lambda", "hypergrad_norm"):
        assert key in first, key
        assert torch.isfinite(torch.tensor(first[key])), (key, first[key])
    assert first["hypergrad_norm"] > 0 and first["lambda"] > 0
    summary = records[-1]
    assert torch.isfinite(torch.tensor(summary["epoch_loss"]))
    assert "epoch_mcr" in summary and "epoch_hypergrad_norm" in summary
    steps = [r for r in records if "epoch_loss" not in r]
    assert [r["step"] for r in steps] == [1, 2]  # every step's parts are logged
    assert all("hypergrad_norm" in r for r in steps)
    ckpt = load_checkpoint(checkpoint_path(tmp_path / "run"))
    assert ckpt["method"] == f"{method}+compmod" and ckpt["compmod"]["step"] == 2


def test_label_without_compmod():
    cfg = load_config(None, ["method.name=simclr"])
    assert method_label(cfg) == "simclr"
    assert method_label(load_config(None, ["method.name=simclr", "compmod.enabled=true"])) == "simclr+compmod"


# ---- acceptance 7: checkpoints carry the head, its optimiser and its step ------------------------------
def _optimizer_state_equal(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys() and a["state"]
    for i in a["state"]:
        for k, v in a["state"][i].items():
            w = b["state"][i][k]
            assert torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w, (i, k)


def test_resume_with_compmod_matches_uninterrupted_run(tmp_path):
    # mixup_h with alpha ~ U(0, 1): the resumed run must also restore the alpha generator
    extra = ["data.subset=64", "train.epochs=2", "compmod.fusion=mixup_h"]
    full = Trainer(_cfg(tmp_path / "a", "simclr", *extra))
    full.fit()
    assert full.state.step == 8
    Trainer(_cfg(tmp_path / "b", "simclr", *extra, "train.max_steps=3")).fit()  # stops mid-epoch 1
    resumed = Trainer(_cfg(tmp_path / "b", "simclr", *extra), resume=True)
    assert resumed.state.step == 3 and resumed.compmod.step == 3
    resumed.fit()
    assert resumed.state.step == 8 and resumed.compmod.step == full.compmod.step == 8
    for name, (a, b) in {
        "head": (full.compmod.head, resumed.compmod.head),
        "model": (full.method, resumed.method),
    }.items():
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (name, k)
    _optimizer_state_equal(full.compmod.optimizer.state_dict(), resumed.compmod.optimizer.state_dict())
    assert torch.equal(full.compmod.generator.get_state(), resumed.compmod.generator.get_state())


def test_resuming_a_run_without_compmod_with_compmod_enabled_fails(tmp_path):
    plain = [*SMALL, "data.subset=32", f"train.run_dir={tmp_path / 'run'}"]
    Trainer(load_config(None, [*plain, "train.max_steps=1"])).fit()
    with pytest.raises(CheckpointError, match="was written without CompMod; cannot resume with it"):
        Trainer(load_config(None, [*plain, "compmod.enabled=true"]), resume=True)


def test_resuming_a_compmod_run_with_compmod_disabled_fails(tmp_path):
    plain = [*SMALL, "data.subset=32", f"train.run_dir={tmp_path / 'run'}"]
    Trainer(load_config(None, [*plain, "compmod.enabled=true", "train.max_steps=1"])).fit()
    with pytest.raises(CheckpointError, match="was written with CompMod; resume with compmod.enabled=true"):
        Trainer(load_config(None, plain), resume=True)
