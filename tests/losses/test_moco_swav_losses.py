"""MoCo's queue InfoNCE and SwAV's Sinkhorn + swapped prediction against independent references (float64),
invariants that pin the conventions (positive at index 0, which marginal is exact) and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from compmod.losses.moco import MoCoLoss, infonce_queue
from compmod.losses.swav import SwAVLoss, sinkhorn, swapped_prediction, swav_loss

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(_randn(*shape, seed=seed), dim=-1)


# --- references, written differently from the library code -------------------------------------------


def moco_reference_builder(
    q: torch.Tensor, k: torch.Tensor, queue_ck: torch.Tensor, t: float
) -> torch.Tensor:
    """facebookresearch/moco moco/builder.py `MoCo.forward` + main_moco.py's criterion, one process: the
    queue in the official (C, K) layout, einsum logits, positive first, labels zeros."""
    q = nn.functional.normalize(q, dim=1)
    k = nn.functional.normalize(k, dim=1)
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue_ck.clone().detach()])
    logits = torch.cat([l_pos, l_neg], dim=1)
    logits /= t
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    return nn.CrossEntropyLoss()(logits, labels)


def moco_reference_eq1(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> float:
    """MoCo (He et al. 2020) Eq. 1 row by row in floats: -log exp(q.k+/t) / sum_{i=0..K} exp(q.k_i/t)."""
    total = 0.0
    for i in range(q.shape[0]):
        qi = q[i] / q[i].norm()
        pos = math.exp(float(qi @ (k[i] / k[i].norm())) / t)
        neg = sum(math.exp(float(qi @ queue[j]) / t) for j in range(queue.shape[0]))
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def sinkhorn_reference_main_swav(out: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """facebookresearch/swav main_swav.py `distributed_sinkhorn` at world_size 1 (all_reduce = identity):
    Q is K-by-B, in-place scalings, rows (prototypes) to 1/K then columns (samples) to 1/B."""
    q = torch.exp(out / epsilon).t()
    b = q.shape[1]
    k = q.shape[0]
    q /= torch.sum(q)
    for _ in range(iterations):
        q /= torch.sum(q, dim=1, keepdim=True)
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def sinkhorn_reference_scaling_vectors(out: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """SwAV paper (Caron et al. 2020) Eq. 3, Q* = Diag(u) exp(C^T Z / eps) Diag(v), with the scaling vectors
    of Sinkhorn-Knopp (Cuturi 2013, Alg. 1) in NumPy: u = r / (P v), v = c / (P^T u), r = 1/K, c = 1/B;
    returned as B x K and multiplied by B (each sample's code sums to 1)."""
    p = np.exp(out.numpy().T / epsilon)  # K x B
    k, b = p.shape
    v = np.ones(b)
    for _ in range(iterations):
        u = (1.0 / k) / (p @ v)
        v = (1.0 / b) / (p.T @ u)
    return torch.from_numpy((u[:, None] * p * v[None, :]).T * b)


def swav_reference_main_swav(
    output: torch.Tensor,
    prototypes: torch.Tensor,
    queue: torch.Tensor | None,
    temperature: float,
    epsilon: float,
    iterations: int,
) -> torch.Tensor:
    """main_swav.py's loss loop with nmb_crops [2], crops_for_assign [0, 1]: `output` (2B, K) holds the
    scores of crop 0 then crop 1; `queue` (2, M, D) past embeddings, scored by the prototypes (K, D)."""
    bs = output.shape[0] // 2
    nmb_crops = [2]
    loss = 0
    for i, crop_id in enumerate([0, 1]):
        with torch.no_grad():
            out = output[bs * crop_id : bs * (crop_id + 1)].detach()
            if queue is not None:
                out = torch.cat((torch.mm(queue[i], prototypes.t()), out))
            q = sinkhorn_reference_main_swav(out, epsilon, iterations)[-bs:]
        subloss = 0
        for v in np.delete(np.arange(np.sum(nmb_crops)), crop_id):
            x = output[bs * v : bs * (v + 1)] / temperature
            subloss -= torch.mean(torch.sum(q * F.log_softmax(x, dim=1), dim=1))
        loss += subloss / (np.sum(nmb_crops) - 1)
    return loss / 2


# --- MoCo InfoNCE with a queue ------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_infonce_queue_matches_moco_builder_and_eq1(temperature: float) -> None:
    q, k, queue = _randn(6, 5, seed=0), _randn(6, 5, seed=1), _unit(11, 5, seed=2)
    loss = infonce_queue(q, k, queue, temperature)
    assert_close(loss, moco_reference_builder(q, k, queue.T.contiguous(), temperature), **TOL)
    assert_close(loss, torch.tensor(moco_reference_eq1(q, k, queue, temperature), dtype=torch.float64), **TOL)
    assert_close(MoCoLoss(temperature)(q, k, queue), loss, **TOL)
    assert MoCoLoss().temperature == 0.2


def test_infonce_queue_positive_is_at_index_zero() -> None:
    """q = k = e_0, negatives e_1..e_K (orthogonal): each row sees exp(1/t) against K * exp(0)."""
    n, k_neg, t = 3, 4, 0.2
    e = torch.eye(k_neg + 1, dtype=torch.float64)
    q = e[0].repeat(n, 1)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + k_neg))
    assert_close(infonce_queue(q, q.clone(), e[1:], t), torch.tensor(expected, dtype=torch.float64), **TOL)
    # the positive matters: the same key among the negatives instead gives a different (larger) loss
    swapped = infonce_queue(q, e[1].repeat(n, 1), torch.cat([e[0:1], e[2:]]), t)
    assert swapped > infonce_queue(q, q.clone(), e[1:], t) + 1


def test_infonce_queue_invariances() -> None:
    q, k, queue = _randn(6, 5, seed=0), _randn(6, 5, seed=1), _unit(11, 5, seed=2)
    loss = infonce_queue(q, k, queue, 0.2)
    scale = torch.rand(6, 1, dtype=torch.float64) * 10 + 0.1
    assert_close(infonce_queue(q * scale, k / scale, queue, 0.2), loss, **TOL)
    assert_close(infonce_queue(q, k, queue[torch.randperm(11)], 0.2), loss, **TOL)
    rows = torch.randperm(6)
    assert_close(infonce_queue(q[rows], k[rows], queue, 0.2), loss, **TOL)
    # an empty queue leaves only the positive logit: the loss is exactly 0
    assert float(infonce_queue(q, k, queue[:0], 0.2)) == 0.0


def test_infonce_queue_gradcheck_and_no_gradient_to_a_detached_key() -> None:
    q, k, queue = _randn(4, 3, seed=0).requires_grad_(), _randn(4, 3, seed=1), _unit(5, 3, seed=2)
    assert torch.autograd.gradcheck(lambda a: infonce_queue(a, k, queue, 0.5), (q,))
    kk = k.clone().requires_grad_()
    loss = infonce_queue(q, kk.detach(), queue, 0.5)
    loss.backward()
    assert kk.grad is None and q.grad is not None and torch.isfinite(q.grad).all()


@pytest.mark.parametrize(
    ("q", "k", "queue", "t", "match"),
    [
        ((4, 3), (4, 2), (5, 3), 0.2, "same shape"),
        ((4, 3), (4, 3), (5, 2), 0.2, "queue must be"),
        ((4, 3), (4, 3), (15,), 0.2, "queue must be"),
        ((12,), (12,), (5, 3), 0.2, "2-D"),
        ((4, 3), (4, 3), (5, 3), 0.0, "temperature"),
    ],
)
def test_infonce_queue_rejects_bad_inputs(q: tuple, k: tuple, queue: tuple, t: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        infonce_queue(torch.randn(q), torch.randn(k), torch.randn(queue), t)


# --- SwAV: Sinkhorn-Knopp -----------------------------------------------------------------------------


@pytest.mark.parametrize(("b", "p", "iters"), [(8, 5, 3), (6, 10, 1), (16, 3, 7)])
def test_sinkhorn_matches_main_swav_and_scaling_vectors(b: int, p: int, iters: int) -> None:
    scores = _unit(b, 4, seed=0) @ _unit(p, 4, seed=1).T  # cosine scores, as SwAV's
    codes = sinkhorn(scores, 0.05, iters)
    assert_close(codes, sinkhorn_reference_main_swav(scores.clone(), 0.05, iters), **TOL)
    assert_close(codes, sinkhorn_reference_scaling_vectors(scores, 0.05, iters), **TOL)


def test_sinkhorn_marginals_rows_exact_columns_equipartition_in_the_limit() -> None:
    """main_swav.py ends on the sample scaling: each code sums to exactly 1; each prototype's total
    approaches B/P as the iterations grow (Eq. 3's equal partition)."""
    b, p = 12, 4
    scores = _unit(b, 3, seed=3) @ _unit(p, 3, seed=4).T
    errors = []
    for iters in (1, 3, 10, 100):
        codes = sinkhorn(scores, 0.5, iters)
        assert (codes >= 0).all()
        assert_close(codes.sum(dim=1), torch.ones(b, dtype=torch.float64), **TOL)
        errors.append(float((codes.sum(dim=0) - b / p).abs().max()))
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[0] > 0.1 and errors[3] < 1e-12


def test_sinkhorn_invariances_pin_the_order_of_the_scalings() -> None:
    """A constant per prototype (column) is removed by the first scaling, exactly; a global constant
    by the initial normalisation. A constant per sample is not (the prototype scaling comes first)."""
    scores = _unit(8, 3, seed=5) @ _unit(5, 3, seed=6).T
    codes = sinkhorn(scores, 0.1, 3)
    assert_close(sinkhorn(scores + _randn(1, 5, seed=7), 0.1, 3), codes, **TOL)
    assert_close(sinkhorn(scores + 3.0, 0.1, 3), codes, **TOL)
    assert not torch.allclose(sinkhorn(scores + _randn(8, 1, seed=8), 0.1, 3), codes, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")
def test_sinkhorn_has_no_gradient_and_no_tangent() -> None:
    scores = _randn(6, 4).requires_grad_()
    assert not sinkhorn(scores).requires_grad
    with fwAD.dual_level():
        dual = fwAD.make_dual(_randn(6, 4), torch.ones(6, 4, dtype=torch.float64))
        assert fwAD.unpack_dual(sinkhorn(dual)).tangent is None


def test_sinkhorn_keeps_float64_and_computes_half_in_float32() -> None:
    scores = _unit(8, 3, seed=0) @ _unit(5, 3, seed=1).T
    assert sinkhorn(scores).dtype == torch.float64
    half = sinkhorn(scores.half())
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert_close(half.double(), sinkhorn(scores.half().double()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "eps", "iters", "match"),
    [
        ((6,), 0.05, 3, "2-D"),
        ((0, 4), 0.05, 3, "non-empty"),
        ((6, 4), 0.0, 3, "eps"),
        ((6, 4), 0.05, 0, "iters"),
    ],
)
def test_sinkhorn_rejects_bad_inputs(shape: tuple, eps: float, iters: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sinkhorn(torch.randn(shape), eps, iters)


# --- SwAV: swapped prediction -------------------------------------------------------------------------


@pytest.mark.parametrize("with_queue", [False, True])
def test_swav_loss_matches_main_swav_loop_values_and_gradients(with_queue: bool) -> None:
    b, d, p, m = 6, 4, 7, 9
    protos = _unit(p, d, seed=0)
    output = (_unit(2 * b, d, seed=1) @ protos.T).requires_grad_()
    queue = _unit(2, m, d, seed=2) if with_queue else None
    expected = swav_reference_main_swav(output, protos, queue, 0.1, 0.05, 3)
    (g_expected,) = torch.autograd.grad(expected, output)
    s1, s2 = output[:b], output[b:]
    q1, q2 = (None, None) if queue is None else (queue[0] @ protos.T, queue[1] @ protos.T)
    loss = swav_loss(s1, s2, 0.1, 0.05, 3, q1, q2)
    (g_loss,) = torch.autograd.grad(loss, output)
    assert_close(loss, expected, **TOL)
    assert_close(g_loss, g_expected, **TOL)
    assert_close(SwAVLoss(0.1, 0.05, 3)(s1, s2, q1, q2), expected, **TOL)
    if with_queue:  # the queue really changes the codes
        assert not torch.allclose(swav_loss(s1, s2, 0.1, 0.05, 3), loss, rtol=1e-6)


def test_swapped_prediction_with_one_hot_codes_is_cross_entropy_of_the_other_view() -> None:
    s1, s2 = _randn(5, 4, seed=0), _randn(5, 4, seed=1)
    a1, a2 = torch.tensor([0, 3, 1, 1, 2]), torch.tensor([2, 2, 0, 3, 1])
    c1, c2 = F.one_hot(a1, 4).double(), F.one_hot(a2, 4).double()
    expected = (F.cross_entropy(s2 / 0.1, a1) + F.cross_entropy(s1 / 0.1, a2)) / 2
    assert_close(swapped_prediction(s1, s2, c1, c2, 0.1), expected, **TOL)
    # swapping both views and codes gives the same loss; swapping the codes only does not
    assert_close(swapped_prediction(s2, s1, c2, c1, 0.1), expected, **TOL)
    assert not torch.allclose(swapped_prediction(s1, s2, c2, c1, 0.1), expected)


def test_swav_loss_gradient_flows_through_the_predictions_only() -> None:
    """The codes are targets: the gradient equals that of swapped_prediction with fixed Sinkhorn codes."""
    s1, s2 = _randn(6, 5, seed=0).requires_grad_(), _randn(6, 5, seed=1).requires_grad_()
    c1, c2 = sinkhorn(s1, 0.05, 3), sinkhorn(s2, 0.05, 3)
    g = torch.autograd.grad(swav_loss(s1, s2, 0.1), (s1, s2))
    g_fixed = torch.autograd.grad(swapped_prediction(s1, s2, c1, c2, 0.1), (s1, s2))
    for a, e in zip(g, g_fixed, strict=True):
        assert_close(a, e, **TOL)
    # gradcheck of swav_loss itself would fail by design: finite differences move the codes, which the
    # loss holds constant (targets); with the codes fixed the prediction term is checked
    a, b = s1[:3, :3].detach().requires_grad_(), s2[:3, :3].detach().requires_grad_()
    ca, cb = sinkhorn(a, 0.5, 3), sinkhorn(b, 0.5, 3)
    assert torch.autograd.gradcheck(lambda x, y: swapped_prediction(x, y, ca, cb, 0.5), (a, b))


def test_swav_defaults_and_errors() -> None:
    loss = SwAVLoss()
    assert (loss.temperature, loss.eps, loss.iters) == (0.1, 0.05, 3)
    for kwargs in ({"temperature": 0.0}, {"eps": -1.0}, {"iters": 0}):
        with pytest.raises(ValueError):
            SwAVLoss(**kwargs)
    with pytest.raises(ValueError, match="same shape"):
        swav_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="codes must have"):
        swapped_prediction(torch.randn(4, 3), torch.randn(4, 3), torch.rand(3, 3), torch.rand(3, 3), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        swapped_prediction(torch.randn(4, 3), torch.randn(4, 3), torch.rand(4, 3), torch.rand(4, 3), 0.0)
