"""kNN search precisions: the certified bf16 shortlist returns exactly the float32/float64 neighbours."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compmod.eval.knn import knn_predict
from compmod.eval.knn_bounds import Index
from compmod.eval.knn_search import (
    PROBE_ROWS,
    SHORTLIST_BF16,
    Search,
    default_precision,
    nearest_neighbours,
)

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
            index = Index(train, with_bf16=True)
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


def dense_ties(seed, n_groups=30, copies=20):
    """Learned-feature-like density around the 200th neighbour, made adversarial: groups of vectors within
    ~1e-6 (inside the float32 bound), exact copies across classes, non-negative values (post-ReLU)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n_groups, 32, generator=g).relu() + 0.1 * torch.rand(n_groups, 32, generator=g)
    train = base.repeat_interleave(copies, dim=0) + 1e-6 * torch.rand(n_groups * copies, 32, generator=g)
    train[::7] = train[5]  # exact copies of one vector spread over the index range
    train = torch.cat([train, torch.randn(400, 32, generator=g).relu()])
    labels = torch.randint(0, 6, (train.shape[0],), generator=g)
    test = base[torch.arange(90) % n_groups] + 0.05 * torch.rand(90, 32, generator=g)
    return train, labels, test


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("k", [5, 60, 200])
def test_dense_ties_around_the_kth_match_reference(precision, k):
    train, _, test = dense_ties(seed=k)
    got = nearest_neighbours(train, test, k, precision, chunk_size=37)
    torch.testing.assert_close(got.indices, reference_neighbours(train, test, k), rtol=0, atol=0)
    x, q = F.normalize(train.float(), dim=1).double(), F.normalize(test.float(), dim=1).double()
    torch.testing.assert_close(got.similarities, (q @ x.T).gather(1, got.indices), rtol=0, atol=1e-15)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_one_search_for_several_k_equals_separate_searches(precision):
    train, labels, test = dense_ties(seed=7)
    search = Search(train, [3, 200, 40], precision, chunk_size=50)
    parts = [[search.ordered(m)[0] for m in members] for members in search.chunks(test)]
    for j, k in enumerate([3, 200, 40]):
        got = torch.cat([p[j] for p in parts])
        torch.testing.assert_close(got, reference_neighbours(train, test, k), rtol=0, atol=0)


def test_auto_probe_keeps_bf16_where_it_certifies_and_switches_where_it_does_not():
    if default_precision(torch.device("cpu")) != "bf16":
        pytest.skip("no native bf16 on this CPU: 'auto' is float32 throughout")
    train, _, test = clustered(3000, 400, 48, spread=0.3, seed=8)
    search = Search(train, [5], "auto", chunk_size=256)
    assert sum(1 for _ in search.chunks(test)) == 3 and search.precision == "bf16"  # probe, rest of 1st, 2nd
    # > 512 training vectors within the bf16 bound of every query: the probe's rows fall back to float32.
    g = torch.Generator().manual_seed(9)
    centre = torch.randn(32)
    train = torch.cat([centre + 0.03 * torch.randn(2000, 32, generator=g), torch.randn(500, 32, generator=g)])
    test = centre + 0.03 * torch.randn(300, 32, generator=g)
    search = Search(train, [5], "auto", chunk_size=256)
    found = torch.cat([search.ordered(m)[0] for (m,) in search.chunks(test)])
    assert search.precision == "fp32" and search.fp32_rows == PROBE_ROWS
    torch.testing.assert_close(found, reference_neighbours(train, test, 5), rtol=0, atol=0)
    assert Search(train, [64], "auto").precision == "fp32"  # large k: float32 without a probe


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("k", [5, 200])
def test_members_are_exact_for_any_float32_error_within_the_bound(monkeypatch, precision, k):
    # Certification and the float64 window may only trust what no error within +-delta could change: push
    # every float32 similarity (GEMM and re-ranked dot products) to the edge of its bound, at random.
    g = torch.Generator().manual_seed(k)
    gemm, dots = Index.gemm, Index.dots

    def edge(values, delta):
        sign = torch.randint(0, 2, values.shape, generator=g).float() * 2 - 1
        return values + 0.999 * sign * delta[:, None]

    def worst_gemm(self, q, bf16):
        block = gemm(self, q, bf16)
        return block if bf16 else edge(block, self.fp32_delta(q, gemm=True))

    def worst_dots(self, q, cand, keep):
        return edge(dots(self, q, cand, keep), self.fp32_delta(q, gemm=False))

    monkeypatch.setattr(Index, "gemm", worst_gemm)
    monkeypatch.setattr(Index, "dots", worst_dots)
    train, _, test = dense_ties(seed=k + 1)
    got = nearest_neighbours(train, test, k, precision, chunk_size=40)
    torch.testing.assert_close(got.indices, reference_neighbours(train, test, k), rtol=0, atol=0)
