"""SimSiam, VICReg, W-MSE and MEC as methods: each loss is its loss function on the method's own outputs,
stop-gradients and teachers where the papers have them, W-MSE's step-seeded sub-batch split, MEC's lambda
warm-up, state in buffers, and builders that reject bad parameters. A linear backbone keeps it fast."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.testing import assert_close

from compmod.errors import ConfigError
from compmod.losses.mec import mec_lambda, mec_loss
from compmod.losses.simsiam import simsiam_loss
from compmod.losses.vicreg import vicreg_loss
from compmod.losses.wmse import wmse_loss
from compmod.methods import METHODS, SSLMethod
from compmod.models.host_mirror import set_mirrored

BATCH, FEAT, PROJ = 8, 12, 6
SMALL = {"proj_hidden_dim": 10, "proj_dim": PROJ, "pred_hidden_dim": 5}


def _build(name: str, **overrides: object) -> SSLMethod:
    torch.manual_seed(0)
    cls = METHODS.get(name).params
    fields = {f.name for f in dataclasses.fields(cls)}
    params = cls(**{k: v for k, v in {**SMALL, **overrides}.items() if k in fields})
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, FEAT))
    return METHODS.get(name).build(backbone, FEAT, params).double().train()


def _views(seed: int = 1, n: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(2))


def _step(method: SSLMethod, progress: float, lr: float = 0.5) -> None:
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr)
    method(*_views()).loss.backward()
    opt.step()
    method.after_optimizer_step(progress)


# --- SimSiam ------------------------------------------------------------------------------------------


def test_simsiam_loss_is_symmetric_negative_cosine_on_its_predictions() -> None:
    method = _build("simsiam")
    out = method(*_views())
    z1, z2 = out.z
    p1, p2 = method.predictor(z1), method.predictor(z2)
    assert_close(out.loss, (simsiam_loss(p1, z2) + simsiam_loss(p2, z1)) / 2, rtol=1e-12, atol=1e-12)
    assert out.z[0].shape == (BATCH, PROJ) and out.h[0].shape == (BATCH, FEAT)
    # the projector ends in BatchNorm without affine parameters (FAIR simsiam builder.py)
    last = method.projector[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine


def test_simsiam_stop_gradient_on_the_target_branch() -> None:
    method = _build("simsiam")
    out = method(*_views())
    z1, z2 = out.z
    got = torch.autograd.grad(out.loss, z1, retain_graph=True)[0]
    only_predictor_path = torch.autograd.grad(simsiam_loss(method.predictor(z1), z2.detach()) / 2, z1)[0]
    assert_close(got, only_predictor_path, rtol=1e-10, atol=1e-12)
    both_paths = torch.autograd.grad(
        simsiam_loss(method.predictor(z1), z2) + simsiam_loss(method.predictor(z2), z1), z1
    )
    assert not torch.allclose(got, both_paths[0] / 2)  # the stop-gradient really changes the gradient


# --- VICReg -------------------------------------------------------------------------------------------


def test_vicreg_loss_is_vicreg_loss_of_its_projections() -> None:
    method = _build("vicreg", sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5)
    out = method(*_views())
    assert_close(out.loss, vicreg_loss(*out.z, 2.0, 3.0, 0.5), rtol=1e-12, atol=1e-12)


# --- W-MSE --------------------------------------------------------------------------------------------


def test_wmse_loss_is_wmse_loss_with_its_step_permutations() -> None:
    method = _build("wmse", w_size=4, w_iter=2)
    out = method(*_views())
    perms = method.permutations(BATCH)
    assert perms.shape == (2, BATCH) and all(torch.equal(p.sort().values, torch.arange(BATCH)) for p in perms)
    assert_close(out.loss, wmse_loss(*out.z, perms, 4, method.eps), rtol=1e-12, atol=1e-12)


def test_wmse_forward_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    method = _build("wmse", w_size=4)
    rng = torch.get_rng_state()
    first, second = method(*_views()).loss, method(*_views()).loss
    assert torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), rng)
    # CompMod's stateless re-run: the same loss from functional_call with cloned buffers
    state = {**dict(method.named_parameters()), **{k: b.clone() for k, b in method.named_buffers()}}
    assert torch.equal(functional_call(method, state, _views()).loss, first)


def test_wmse_split_changes_after_each_step_and_resumes_from_the_state_dict() -> None:
    method = _build("wmse", w_size=4)
    x1, x2 = _views()
    before_perm = method.permutations(BATCH)
    with torch.no_grad():
        before = method(x1, x2).loss
    method.after_optimizer_step(0.1)  # no parameter change: only the split moves
    assert int(method.step) == 1 and "step" in method.state_dict()
    assert not torch.equal(method.permutations(BATCH), before_perm)
    with torch.no_grad():
        assert not torch.allclose(method(x1, x2).loss, before)
    fresh = _build("wmse", w_size=4)
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.permutations(BATCH), method.permutations(BATCH))


def test_wmse_batch_smaller_than_w_size_is_whitened_whole_and_bad_splits_fail() -> None:
    method = _build("wmse", w_size=16)  # default-like: larger than the batch of 8
    out = method(*_views())
    assert_close(
        out.loss, wmse_loss(*out.z, torch.arange(BATCH)[None], BATCH, method.eps), rtol=1e-12, atol=1e-12
    )
    with pytest.raises(ValueError, match=r"global batch of 8 is not a multiple of method\.w_size=3"):
        _build("wmse", w_size=3)(*_views())


# --- MEC ----------------------------------------------------------------------------------------------


def _mec_expected(method: SSLMethod, x1: torch.Tensor, x2: torch.Tensor, z, lam: float) -> torch.Tensor:
    t1, t2 = method.target(x1), method.target(x2)
    return mec_loss(method.predictor(z[0]), method.predictor(z[1]), t1, t2, lam, method.order)


def test_mec_loss_is_mec_loss_against_the_teacher_with_lambda_warm_up() -> None:
    method = _build("mec", lambda_warmup=0.2)
    x1, x2 = _views()
    full = mec_lambda(BATCH, PROJ, 64.0)
    out = method(x1, x2)
    assert method.lam(BATCH, PROJ) == pytest.approx(full / 8)  # MEC's warm-up starts at lam / 8
    assert_close(out.loss, _mec_expected(method, x1, x2, out.z, full / 8), rtol=1e-12, atol=1e-12)
    set_mirrored(method, "progress", 0.1)  # half-way: 1/lam = (8/lam + 1/lam) / 2
    assert method.lam(BATCH, PROJ) == pytest.approx(full / 4.5)
    set_mirrored(method, "progress", 0.5)
    out = method(x1, x2)
    assert method.lam(BATCH, PROJ) == pytest.approx(full)
    assert_close(out.loss, _mec_expected(method, x1, x2, out.z, full), rtol=1e-12, atol=1e-12)


def test_mec_teacher_is_a_gradient_free_ema_and_progress_is_state() -> None:
    method = _build("mec")
    online = nn.Sequential(method.backbone, method.projector)
    for t, s in zip(method.target.parameters(), online.parameters(), strict=True):
        assert torch.equal(t, s) and not t.requires_grad
    for _ in range(2):
        _step(method, progress=0.25)
    assert all(p.grad is None for p in method.target.parameters())
    pairs = list(zip(method.target.parameters(), online.parameters(), strict=True))
    assert any(not torch.equal(t, s) for t, s in pairs)  # momentum 0.996 < 1: the teacher lags
    assert float(method.progress) == 0.25 and "progress" in method.state_dict()
    frozen = [t.clone() for t, _ in pairs]
    _step(method, progress=1.0)  # cosine momentum reaches 1: the teacher stops moving
    assert all(torch.equal(t, f) for (t, _), f in zip(pairs, frozen, strict=True))


def test_mec_gradient_flows_only_through_the_online_network() -> None:
    method = _build("mec")
    out = method(*_views())
    out.loss.backward()
    assert method.predictor[0].weight.grad is not None and method.projector[0].weight.grad is not None
    assert all(p.grad is None for p in method.target.parameters())


# --- builders and defaults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("simsiam", "pred_hidden_dim", 0),
        ("vicreg", "sim_coeff", -1.0),
        ("vicreg", "std_coeff", float("nan")),
        ("vicreg", "cov_coeff", -0.5),
        ("wmse", "w_size", 1),
        ("wmse", "w_iter", 0),
        ("wmse", "whiten_eps", 1.5),
        ("mec", "pred_hidden_dim", 0),
        ("mec", "ema_base", 1.5),
        ("mec", "eps_sq", 0.0),
        ("mec", "order", 0),
        ("mec", "lambda_warmup", -0.1),
    ],
)
def test_builder_rejects_bad_parameter(name: str, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"config key method.{field}: "):
        _build(name, **{field: value})


def test_wmse_builder_rejects_exact_whitening_of_too_small_sub_batches() -> None:
    with pytest.raises(ConfigError, match=r"method\.w_size: 6 .* needs w_size > method\.proj_dim=6"):
        _build("wmse", w_size=6, whiten_eps=0.0)
    _build("wmse", w_size=8, whiten_eps=0.0)


def test_defaults_follow_the_official_code() -> None:
    simsiam, vicreg, wmse, mec = (METHODS.get(n).params() for n in ("simsiam", "vicreg", "wmse", "mec"))
    assert (simsiam.proj_dim, simsiam.pred_hidden_dim, simsiam.proj_layers) == (2048, 512, 3)
    assert (vicreg.sim_coeff, vicreg.std_coeff, vicreg.cov_coeff, vicreg.proj_dim) == (25.0, 25.0, 1.0, 2048)
    assert (wmse.w_size, wmse.w_iter, wmse.proj_dim, wmse.proj_hidden_dim, wmse.proj_layers) == (
        128,
        1,
        64,
        1024,
        2,
    )
    assert (mec.ema_base, mec.eps_sq, mec.order, mec.pred_hidden_dim, mec.proj_dim) == (
        0.996,
        64.0,
        4,
        512,
        2048,
    )
    presets = {n: METHODS.get(n).augment_preset for n in ("simsiam", "vicreg", "wmse", "mec")}
    assert presets == {"simsiam": "simclr", "vicreg": "barlow_twins", "wmse": "simclr", "mec": "byol"}
