"""Effective rank and coding rate against independent NumPy computations, closed forms and invariants."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tests.helpers import requires_fmnist, run_cli

from compmod.config import load_config
from compmod.config.load import config_from_dict
from compmod.data.augment import eval_transform
from compmod.data.build import build_dataset
from compmod.engine.builders import build_method
from compmod.engine.checkpoint import load_checkpoint
from compmod.engine.trainer import Trainer
from compmod.eval.diagnostics import coding_rate, effective_rank, representation_stats


def _orthonormal(n: int, k: int, seed: int, centred: bool = False) -> torch.Tensor:
    """(n, k) orthonormal columns; with `centred` also orthogonal to the all-ones vector."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, k + int(centred), generator=g, dtype=torch.float64)
    if centred:
        a[:, 0] = 1.0
    q, _ = torch.linalg.qr(a)
    return q[:, int(centred) :]


def _random(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _erank_numpy(x: np.ndarray, centre: bool, eps: float = 0.0, noise: float = 0.0) -> float:
    """Roy & Vetterli / RankMe written out in NumPy, independently of the implementation; singular values
    at most max(N, D) * noise * ||x||_F (x before centring) count as 0 (`noise`: the input's machine eps)."""
    x = np.asarray(x, dtype=np.float64)
    tol = max(x.shape) * noise * np.linalg.norm(x)
    if centre:
        x = x - x.mean(axis=0)
    s = np.linalg.svd(x, compute_uv=False)
    s = np.where(s > tol, s, 0.0)
    p = s / s.sum() + eps
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def _coding_rate_numpy(x: np.ndarray, eps: float) -> float:
    """1/2 sum_i log(1 + d/(m eps^2) lambda_i), lambda_i the eigenvalues of Z^T Z (Z: rows normalised)."""
    z = np.asarray(x, dtype=np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    m, d = z.shape
    lam = np.linalg.eigvalsh(z.T @ z)
    return float(0.5 * np.log1p(d / (m * eps**2) * np.clip(lam, 0, None)).sum())


# ---- effective rank --------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("centre", [True, False])
def test_effective_rank_of_k_equal_singular_values_is_k(k, centre):
    # centred columns of U: centring leaves x = 2.5 U V^T unchanged, so both variants see k equal values
    x = 2.5 * _orthonormal(50, k, seed=k, centred=True) @ _orthonormal(20, k, seed=k + 100).T
    assert effective_rank(x, centre=centre) == pytest.approx(k, rel=1e-10)


def test_effective_rank_of_rank_one_matrix_is_one():
    a, b = _random(40, 1, seed=1), _random(1, 16, seed=2)
    assert effective_rank(a.double() @ b.double()) == pytest.approx(1.0, rel=1e-10)
    assert effective_rank(a.double() @ b.double(), centre=False) == pytest.approx(1.0, rel=1e-10)
    # a float32 product carries rounding noise at float32 epsilon: below the tolerance, still rank one
    assert effective_rank(a @ b) == pytest.approx(1.0, rel=1e-10)
    # uncentred: a constant column offset times b is rank one too
    assert effective_rank(torch.ones(30, 1) @ b, centre=False) == pytest.approx(1.0, rel=1e-10)


@pytest.mark.parametrize("centre", [True, False])
def test_effective_rank_matches_numpy_reference(centre):
    x = _random(64, 24, seed=3) @ torch.diag(torch.logspace(0, -2, 24))  # a spread-out spectrum
    expected = _erank_numpy(x.numpy(), centre)
    assert effective_rank(x, centre=centre) == pytest.approx(expected, rel=1e-10)
    assert 1.0 < expected < 24.0


def test_effective_rank_with_eps_is_rankme():
    x = _random(64, 24, seed=4).abs()  # non-negative, ReLU-like: a large mean direction
    rankme = _erank_numpy(x.numpy(), centre=False, eps=1e-7)
    assert effective_rank(x, centre=False, eps=1e-7) == pytest.approx(rankme, rel=1e-10)
    assert effective_rank(x, centre=False, eps=1e-7) == pytest.approx(effective_rank(x, centre=False), 1e-4)
    # the shared offset is one dominant direction uncentred; centring removes it and the rank rises
    assert effective_rank(x, centre=True) > effective_rank(x, centre=False)


def test_effective_rank_invariant_to_rotation_scale_and_translation():
    x = _random(80, 12, seed=5).double() @ torch.diag(torch.linspace(1, 0.1, 12, dtype=torch.float64))
    q = _orthonormal(12, 12, seed=6)
    base = effective_rank(x)
    assert effective_rank(x @ q) == pytest.approx(base, rel=1e-10)
    assert effective_rank(1e-3 * x) == pytest.approx(base, rel=1e-10)
    assert effective_rank(x + torch.randn(1, 12, dtype=torch.float64)) == pytest.approx(base, rel=1e-10)
    assert effective_rank(1e3 * x, centre=False) == pytest.approx(effective_rank(x, centre=False), rel=1e-10)


def test_effective_rank_of_collapsed_features_is_zero_and_float32_is_computed_in_float64():
    assert effective_rank(torch.ones(10, 4) * 0.3) == 0.0  # identical rows, centred: nothing left
    assert effective_rank(torch.zeros(5, 3), centre=False) == 0.0
    x = _random(32, 8, seed=7)
    assert effective_rank(x) == pytest.approx(_erank_numpy(x.double().numpy(), True), rel=1e-12)


@pytest.mark.parametrize(
    "bad", [torch.zeros(3), torch.zeros(0, 4), torch.zeros(2, 3, 4), torch.tensor([[1.0, float("nan")]])]
)
def test_diagnostics_reject_malformed_input(bad):
    with pytest.raises(ValueError):
        effective_rank(bad)
    with pytest.raises(ValueError):
        coding_rate(bad)


# ---- coding rate -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("m", "d"), [(16, 48), (48, 16), (20, 20)])
@pytest.mark.parametrize("eps", [0.5, 0.1])
def test_coding_rate_matches_eigenvalue_sum(m, d, eps):
    x = _random(m, d, seed=m + d) * torch.rand(m, 1, generator=torch.Generator().manual_seed(8)) * 5
    assert coding_rate(x, eps) == pytest.approx(_coding_rate_numpy(x.numpy(), eps), rel=1e-10)


@pytest.mark.parametrize(("m", "d"), [(12, 40), (40, 12)])
def test_coding_rate_sylvester_identity_gram_m_by_m_equals_d_by_d(m, d):
    """The implementation factorises the smaller Gram; both sides of Sylvester's identity agree with it."""
    x = _random(m, d, seed=9)
    z = torch.nn.functional.normalize(x.double(), dim=1)
    a = d / (m * 0.5**2)
    _, logdet_d = torch.linalg.slogdet(torch.eye(d, dtype=torch.float64) + a * z.T @ z)  # d x d
    _, logdet_m = torch.linalg.slogdet(torch.eye(m, dtype=torch.float64) + a * z @ z.T)  # m x m
    assert float(logdet_d) == pytest.approx(float(logdet_m), rel=1e-12)
    assert coding_rate(x) == pytest.approx(0.5 * float(logdet_d), rel=1e-12)


@pytest.mark.parametrize(("m", "d"), [(10, 32), (64, 8)])
def test_coding_rate_of_identical_rows_is_the_rank_one_closed_form(m, d):
    row = _random(1, d, seed=10)
    eps = 0.5
    # Z^T Z = m u u^T: one eigenvalue m -> 1/2 log(1 + d/(m eps^2) * m)
    expected = 0.5 * math.log(1 + d / (m * eps**2) * m)
    assert coding_rate(row.repeat(m, 1) * 3.0, eps) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("m", "d"), [(8, 32), (32, 8), (16, 16)])
def test_coding_rate_is_largest_for_a_flat_gram_spectrum(m, d):
    k = min(m, d)
    eps = 0.5
    bound = k / 2 * math.log(1 + d / (k * eps**2))
    # m <= d: orthonormal rows reach it; m > d: m / d copies of an orthonormal basis (Z^T Z = (m / d) I)
    x = _orthonormal(d, m, seed=11).T if m <= d else _orthonormal(d, d, seed=11).repeat(m // d, 1)
    assert coding_rate(x, eps) == pytest.approx(bound, rel=1e-10)
    assert coding_rate(_random(m, d, seed=12), eps) < bound


def test_coding_rate_grows_with_spread():
    g = torch.Generator().manual_seed(13)
    centre, noise = torch.randn(1, 32, generator=g), torch.randn(64, 32, generator=g)
    rates = [coding_rate(centre + s * noise) for s in (0.0, 0.05, 0.2, 1.0, 5.0)]
    assert all(b > a for a, b in zip(rates, rates[1:], strict=False)), rates
    assert rates[0] == pytest.approx(0.5 * math.log(1 + 32 / 0.25), rel=1e-12)


def test_coding_rate_rejects_non_positive_eps():
    with pytest.raises(ValueError, match="eps"):
        coding_rate(torch.ones(3, 2), eps=0.0)


# ---- both ------------------------------------------------------------------------------------------
def test_representation_stats_names_and_values():
    h, z = _random(50, 32, seed=14), _random(50, 8, seed=15)
    stats = representation_stats(h, z)
    assert stats == {
        "h_effective_rank": effective_rank(h),
        "z_effective_rank": effective_rank(z),
        "h_coding_rate": coding_rate(h),
        "z_coding_rate": coding_rate(z),
    }
    with pytest.raises(ValueError, match="same rows"):
        representation_stats(h, z[:10])


# ---- `compmod eval diagnostics` on a trained checkpoint ----------------------------------------------
@requires_fmnist
@pytest.mark.slow
def test_cli_eval_diagnostics_measures_h_and_z_of_the_test_images(tmp_path):
    """The CLI's figures equal the NumPy formulas above applied to [h | z] of the checkpoint's method on the
    first eval.test_subset test images (rebuilt here from the checkpoint, outside the CLI)."""
    run = tmp_path / "run"
    small = ["method.proj_hidden_dim=64", "method.proj_dim=32", "train.progress=false"]
    cfg = load_config(
        None,
        [
            *small,
            "data.subset=128",
            "train.batch_size=64",
            "train.max_steps=2",
            "compmod.enabled=true",
            f"train.run_dir={run}",
        ],
    )
    Trainer(cfg).fit()
    ckpt = run / "checkpoints" / "last.pt"
    done = run_cli("eval", "diagnostics", "--checkpoint", str(ckpt), "--set", "eval.test_subset=300")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["eval_test_size"] == 300

    state = load_checkpoint(ckpt)
    method = build_method(config_from_dict(state["config"]), 1, 28)
    method.load_state_dict(state["model"])
    method.eval()
    images = build_dataset(cfg, "test").images[:300]
    mean, std = tuple(state["data"]["mean"]), tuple(state["data"]["std"])
    with torch.no_grad():
        h = method.backbone(eval_transform(images, 28, mean, std))
        z = method.projector(h)
    for name, x in (("h", h.numpy()), ("z", z.numpy())):
        # float32 features: singular values within float32 rounding noise are not directions
        erank = _erank_numpy(x, centre=True, noise=float(np.finfo(np.float32).eps))
        assert out[f"test_{name}_effective_rank"] == pytest.approx(erank, rel=1e-4)
        assert out[f"test_{name}_coding_rate"] == pytest.approx(_coding_rate_numpy(x, 0.5), rel=1e-4)
    assert 1.0 < out["test_z_effective_rank"] <= 32.0
