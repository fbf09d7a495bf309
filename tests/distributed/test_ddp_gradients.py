"""Two gloo processes on CPU against one process on the same global batch (float64): every method's loss
(the batch-coupled ones gather across ranks) and gradients through DDP, and CompMod's real-step loss,
gradients and xi-hypergradient in each meta mode. Acceptance: <= 1e-6 relative."""

from __future__ import annotations

import pytest
import torch
from tests.distributed.spawn import run_jobs, run_ranks
from tests.distributed.workers import compmod_hypergrads, method_loss_and_grads, three_steps
from tests.helpers import built_once

from compmod.methods import METHODS

RTOL = 1e-6
NAMES = METHODS.names()
META = [("jvp", "concat_h"), ("exact", "mixup_h"), ("off", "concat_z")]
# methods with state carried across steps: EMA teachers, queues (filled, wrapped and read), SwAV's
# prototypes unfrozen, W-MSE's step-seeded sub-batch permutation
STATEFUL = {
    "byol": [],
    "moco_v2": ["method.queue_size=24"],
    "swav": ["method.freeze_prototypes_steps=1", "method.queue_size=32", "method.queue_start_step=0"],
    "wmse": [],
}
JOBS = {
    "methods": (method_loss_and_grads, (NAMES,)),
    **{f"compmod-{mode}-{fusion}": (compmod_hypergrads, (NAMES, mode, fusion)) for mode, fusion in META},
    **{f"steps-{name}": (three_steps, (name, extra)) for name, extra in STATEFUL.items()},
}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The module's tests share one 2-process spawn (once per session), each reading its job's results."""
    folder = built_once(tmp_path_factory, "ddp-gradients", lambda out: run_ranks(run_jobs, out, JOBS))
    return [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-300) -> float:
    return float((a - b).norm() / b.norm().clamp_min(floor))


def _check(name: str, got: dict, ref: dict) -> float:
    """Largest relative error of the loss and of each gradient; asserts the same gradients exist.

    A gradient that is zero in exact arithmetic (e.g. the bias of a layer followed by a standardisation:
    ~1e-15 here) is measured against 1e-9 of the whole gradient's norm instead of its own."""
    assert got["grads"].keys() == ref["grads"].keys(), name
    total = float(torch.cat([g.reshape(-1) for g in ref["grads"].values()]).norm())
    assert total > 0, name  # not a 0 == 0 comparison
    errors = [_rel(got["loss"], ref["loss"])]
    errors += [_rel(got["grads"][k], ref["grads"][k], 1e-9 * total) for k in ref["grads"]]
    for g, r in zip(got.get("hyper", []), ref.get("hyper", []), strict=True):
        errors.append(_rel(g, r))
    return max(errors)


def test_every_method_loss_and_gradients_match_one_process(ranks):
    ref = method_loss_and_grads(NAMES)
    got = [rank["methods"] for rank in ranks]
    for name in NAMES:
        for rank in got:
            assert _check(name, rank[name], ref[name]) <= RTOL, name
        # both ranks hold the same (global) loss and the same averaged gradients
        assert torch.equal(got[0][name]["loss"], got[1][name]["loss"])


@pytest.mark.parametrize(("mode", "fusion"), META)
def test_compmod_hypergradient_matches_one_process(ranks, mode, fusion):
    ref = compmod_hypergrads(NAMES, mode, fusion)
    for name in NAMES:
        assert any(float(g.norm()) > 0 for g in ref[name]["hyper"]), name
        for rank in ranks:
            assert _check(name, rank[f"compmod-{mode}-{fusion}"][name], ref[name]) <= RTOL, (name, mode)


@pytest.mark.parametrize("name", list(STATEFUL))
def test_three_steps_with_state_match_one_process(ranks, name):
    ref = three_steps(name, STATEFUL[name])
    for rank in (r[f"steps-{name}"] for r in ranks):
        assert float(((rank["losses"] - ref["losses"]).abs() / ref["losses"].abs()).max()) <= RTOL
        for part in ("state", "head"):
            for key, value in ref[part].items():
                if value.is_floating_point():
                    scale = float(value.abs().max().clamp_min(1e-12))
                    assert float((rank[part][key] - value).abs().max()) <= RTOL * scale, (name, key)
                else:
                    assert torch.equal(rank[part][key], value), (name, key)
