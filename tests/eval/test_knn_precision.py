"""kNN search precisions: the certified bf16 shortlist returns exactly the float32/float64 neighbours."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compmod.eval.knn import knn_predict
from compmod.eval.knn_search import SHORTLIST_BF16, _Index, default_precision, nearest_neighbours

PRECISIONS = ["fp32", "bf16"]


def reference_neighbours(train, test, k):
    """The documented rule by brute force: float64 dots of the float32 unit vectors, rounded to float32,
    sorted by similarity descending and, among equal similarities, by training index ascending."""
    x, q = F.normalize(train.float(), dim=1).double(), F.normalize(test.float(), dim=1).double()
    sims = (q @ x.T).float()
    order = sims.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return order


def clustered(n_train, n_test, d, spread, seed, classes=10):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=g)
    train_labels = torch.randint(0, classes, (n_train,), generator=g)
    test_labels = torch.randint(0, classes, (n_test,), generator=g)
    train = centres[train_labels] + spread * torch.randn(n_train, d, generator=g)
    test = centres[test_labels] + spread * torch.randn(n_test, d, generator=g)
    return train, train_labels, test


def near_duplicates(seed):
    """Groups of training vectors within ~1e-3 (far inside the bf16 bound) plus exact copies."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(40, 64, generator=g)
    train = base.repeat_interleave(30, dim=0) + 1e-3 * torch.randn(1200, 64, generator=g)
    train[1::2] = train[3]  # 600 exact copies of one vector (> the longest bf16 shortlist), every other index
    labels = torch.randint(0, 5, (1200,), generator=g)
    test = base[torch.arange(120) % 40] + 2e-3 * torch.randn(120, 64, generator=g)
    test[:10] = train[3] + 1e-4 * torch.randn(10, 64, generator=g)
    return train, labels, test


def test_bf16_bound_holds_on_large_sample():
    # Random directions, clustered (similarities near 1) and non-negative features, d = 512 and 37.
    g = torch.Generator().manual_seed(0)
    for d in (512, 37):
        centres = torch.randn(8, d, generator=g)
        x = torch.cat(
            [torch.randn(3000, d, generator=g), centres.repeat(250, 1) + 0.05 * torch.randn(2000, d)]
        )
        q = torch.cat([torch.randn(300, d, generator=g), centres.repeat(40, 1) + 0.05 * torch.randn(320, d)])
        for feats in (x, x.relu()):
            train, test = (
                F.normalize(feats.float(), dim=1),
                F.normalize(q.relu() if feats is not x else q, dim=1),
            )
            index = _Index(train, "bf16")
            qb = test.to(torch.bfloat16)
            approx = (qb @ index.train_bf16.T).float()
            exact = test.double() @ train.double().T
            out = torch.where(approx.max(dim=1, keepdim=True).values < 1, 2.0**-9, 2.0**-7)
            delta = index.bf16_delta(test, qb)[:, None] + out
            err = (approx.double() - exact).abs()
            assert (err <= delta).all(), f"bound violated by {(err - delta).max().item():.3g}"
            assert err.max() > 0.2 * delta.min()  # the bound is not vacuous


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("k", [1, 5, 20])
def test_nearest_neighbours_match_reference_on_clusters(precision, k):
    train, _, test = clustered(3000, 400, 48, spread=0.3, seed=k)
    got = nearest_neighbours(train, test, k, precision, chunk_size=128)
    torch.testing.assert_close(got.indices, reference_neighbours(train, test, k), rtol=0, atol=0)
    assert got.precision == precision and got.similarities.dtype == torch.float64


@pytest.mark.parametrize("precision", PRECISIONS)
def test_near_duplicates_and_copies_match_reference_and_force_fallbacks(precision):
    train, _, test = near_duplicates(seed=1)
    got = nearest_neighbours(train, test, 5, precision, chunk_size=50)
    torch.testing.assert_close(got.indices, reference_neighbours(train, test, 5), rtol=0, atol=0)
    # Queries next to the 600 copies: > 512 samples within the bf16 bound and > k + 8 exact ties.
    assert got.exact_rows >= 10
    if precision == "bf16":
        assert got.fp32_rows >= 10
    # Exactly equal similarities are ranked by training index: the first copies, in order.
    torch.testing.assert_close(got.indices[:10], torch.tensor([[1, 3, 5, 7, 9]]).expand(10, 5))


def test_bf16_fallback_to_float32_rows_is_exact():
    # 2000 training vectors within ~2e-3 in cosine: more than 512 inside the bf16 bound (~0.01), but far
    # apart for the float32 bound (~4e-6).
    g = torch.Generator().manual_seed(2)
    centre = torch.randn(32)
    train = torch.cat([centre + 0.03 * torch.randn(2000, 32, generator=g), torch.randn(500, 32, generator=g)])
    test = centre + 0.03 * torch.randn(30, 32, generator=g)
    got = nearest_neighbours(train, test, 5, "bf16")
    assert got.fp32_rows == 30 and got.exact_rows == 0
    torch.testing.assert_close(got.indices, reference_neighbours(train, test, 5), rtol=0, atol=0)


@pytest.mark.parametrize("weighted", [False, True])
def test_knn_predict_is_the_same_for_every_precision(weighted):
    for train, labels, test in (clustered(4000, 500, 64, 0.8, seed=3, classes=7), near_duplicates(seed=4)):
        preds = [knn_predict(train, labels, test, 10, 7, weighted, 0.1, 256, p) for p in PRECISIONS]
        torch.testing.assert_close(preds[0], preds[1], rtol=0, atol=0)
        assert (preds[0] != preds[0][0]).any()  # not a constant prediction


def test_shortlist_levels_certify_most_queries_on_clusters():
    train, _, test = clustered(20_000, 500, 128, spread=0.5, seed=5)
    got = nearest_neighbours(train, test, 5, "bf16")
    assert got.fp32_rows <= 0.05 * len(test), f"{got.fp32_rows} float32 fallbacks ({SHORTLIST_BF16})"


def test_precision_argument_and_default():
    assert default_precision(torch.device("cuda")) == "fp32"
    assert default_precision(torch.device("cpu")) in ("fp32", "bf16")
    train, _, test = clustered(50, 5, 8, 0.1, seed=6)
    assert nearest_neighbours(train, test, 3).precision == default_precision(torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of"):
        nearest_neighbours(train, test, 3, precision="fp16")
    with pytest.raises(ValueError, match=r"k must be in \[1, 50\]"):
        nearest_neighbours(train, test, 51)
