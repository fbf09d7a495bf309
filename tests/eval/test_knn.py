"""kNN on frozen features: equality with a brute-force reference, the tie rule, the weighted vote, inputs."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from compmod.eval import knn_search
from compmod.eval.knn import knn_accuracies, knn_accuracy, knn_predict, knn_predict_votes, pixel_features

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def reference_knn(train, train_labels, test, k, num_classes, weighted, temperature):
    """Full float64 similarity matrix, argsort, and a Python-loop vote with the documented tie rule:
    highest vote wins; exact ties go to the tied class whose member comes first among the neighbours."""
    train = torch.nn.functional.normalize(train.double(), dim=1)
    test = torch.nn.functional.normalize(test.double(), dim=1)
    sims = test @ train.T  # (M, N), materialised on purpose
    order = sims.argsort(dim=1, descending=True, stable=True)
    # Guard on the test data itself: float32 and float64 rankings agree only without near-ties.
    top_sims = sims.gather(1, order[:, : k + 1])
    assert (top_sims[:, :-1] - top_sims[:, 1:]).min() > 1e-6, "test data has a near-tie in similarity"
    preds = []
    for row in range(test.shape[0]):
        votes = [0.0] * num_classes
        neighbours = order[row, :k].tolist()
        for j in neighbours:
            votes[int(train_labels[j])] += math.exp(sims[row, j].item() / temperature) if weighted else 1.0
        best = max(votes)
        if weighted:
            runner_up = sorted(votes)[-2] if num_classes > 1 else 0.0
            assert best == runner_up or (best - runner_up) / best > 1e-5, "near-tie in weighted votes"
        tied = {c for c in range(num_classes) if votes[c] == best}
        preds.append(next(int(train_labels[j]) for j in neighbours if int(train_labels[j]) in tied))
    return torch.tensor(preds)


@pytest.fixture(scope="module")
def random_data():
    g = torch.Generator().manual_seed(0)
    train = torch.randn(300, 16, generator=g)
    test = torch.randn(120, 16, generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)
    return train, labels, test


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 1024])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [1, 2, 4, 7, 20])
def test_knn_predict_matches_bruteforce_reference(random_data, k, weighted, chunk_size):
    train, labels, test = random_data
    temperature = 0.5  # large enough that several neighbours matter in the weighted vote
    got = knn_predict(train, labels, test, k, 4, weighted, temperature, chunk_size)
    want = reference_knn(train, labels, test, k, 4, weighted, temperature)
    assert got.dtype == torch.int64 and got.shape == (120,)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_knn_predict_float64_inputs_match_float32(random_data):
    train, labels, test = random_data
    got = knn_predict(train.double(), labels, test.double(), 5, 4, chunk_size=33)
    torch.testing.assert_close(got, knn_predict(train, labels, test, 5, 4), rtol=0, atol=0)
    torch.testing.assert_close(got, reference_knn(train, labels, test, 5, 4, False, 1.0), rtol=0, atol=0)


def test_knn_predict_unweighted_ties_go_to_nearest_neighbour_class():
    # Test point along +x; neighbours by decreasing cosine: class 1, class 0, class 0, class 1, then far ones.
    angles = torch.tensor([0.1, 0.2, 0.3, 0.4, 3.0])
    train = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([1, 0, 0, 1, 2])
    test = torch.tensor([[1.0, 0.0]])
    # k=4: 2-2 tie between classes 0 and 1; the nearest neighbour is class 1 (argmax of counts would say 0).
    assert knn_predict(train, labels, test, k=4, num_classes=3).item() == 1
    # k=3: class 0 has a strict majority (2 vs 1) and beats the nearest neighbour's class.
    assert knn_predict(train, labels, test, k=3, num_classes=3).item() == 0
    # k=1: the nearest neighbour alone.
    assert knn_predict(train, labels, test, k=1, num_classes=3).item() == 1
    # Same tie with the classes renamed: the rule follows the nearest neighbour, not the class index.
    assert knn_predict(train, 1 - labels.clamp(max=1), test, k=4, num_classes=3).item() == 0


def test_knn_predict_weighted_matches_hand_computed_votes():
    # Cosines to the test point (1, 0): 1.0 (class 0), 0.8 and 0.6 (class 1), -1.0 (class 0).
    train = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    test = torch.tensor([[1.0, 0.0]])
    # T = 0.1: class 0 gets e^10 = 22026; class 1 gets e^8 + e^6 = 2981 + 403 = 3384 -> class 0.
    assert knn_predict(train, labels, test, 3, 2, weighted=True, temperature=0.1).item() == 0
    # T = 1: class 0 gets e^1 = 2.72; class 1 gets e^0.8 + e^0.6 = 2.23 + 1.82 = 4.05 -> class 1.
    assert knn_predict(train, labels, test, 3, 2, weighted=True, temperature=1.0).item() == 1
    # Unweighted: 2 votes against 1 -> class 1.
    assert knn_predict(train, labels, test, 3, 2).item() == 1
    # A tiny temperature must not overflow into inf/NaN votes: e^(1/0.001) is far beyond float32.
    assert knn_predict(train, labels, test, 3, 2, weighted=True, temperature=1e-3).item() == 0


@pytest.mark.parametrize(("k", "weighted"), [(5, False), (200, True)])
def test_knn_accuracy_separable_clusters_is_100(k, weighted):
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(8)[:5] * 10.0  # orthogonal directions
    train_labels = torch.arange(5).repeat_interleave(60)
    test_labels = torch.arange(5).repeat(20)
    train = centres[train_labels] + torch.randn(300, 8, generator=g)
    test = centres[test_labels] + torch.randn(100, 8, generator=g)
    acc = knn_accuracy(train, train_labels, test, test_labels, k=k, weighted=weighted, chunk_size=32)
    assert acc == 100.0


def test_knn_accuracy_is_a_percentage():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    test = torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.2], [0.2, 1.0]])
    assert knn_accuracy(train, labels, test, torch.tensor([0, 1, 1, 1]), k=1) == 75.0
    assert knn_accuracy(train, labels, test, torch.tensor([1, 0, 1, 0]), k=1) == 0.0


def test_knn_k_larger_than_train_set_warns_and_uses_all_samples(random_data):
    train, labels, test = random_data
    with pytest.warns(UserWarning, match="k=500 exceeds the 300 training samples"):
        got = knn_predict(train, labels, test, 500, 4)
    torch.testing.assert_close(got, knn_predict(train, labels, test, 300, 4), rtol=0, atol=0)
    # With k = N unweighted, every test point gets the majority class of the whole train set.
    assert (got == labels.bincount().argmax()).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be >= 1"),
        ({"train_labels": torch.zeros(299, dtype=torch.long)}, r"train_labels must have shape \(300,\)"),
        ({"test_feats": torch.randn(4, 15)}, "feature dims differ"),
        ({"train_feats": torch.randn(0, 16), "train_labels": torch.zeros(0, dtype=torch.long)}, "non-empty"),
        ({"test_feats": torch.randn(0, 16)}, "non-empty"),
        ({"train_labels": torch.full((300,), 4)}, r"must lie in \[0, 4\)"),
        ({"train_labels": torch.zeros(300)}, "labels must be integers"),
        ({"train_feats": torch.randn(300, 16, 1)}, "must be 2-D"),
        ({"weighted": True, "temperature": 0.0}, "temperature must be > 0"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
    ],
)
def test_knn_predict_rejects_bad_inputs(random_data, kwargs, match):
    train, labels, test = random_data
    args = {"train_feats": train, "train_labels": labels, "test_feats": test, "k": 5, "num_classes": 4}
    with pytest.raises(ValueError, match=match):
        knn_predict(**(args | kwargs))


def test_knn_accuracy_rejects_mismatched_test_labels(random_data):
    train, labels, test = random_data
    with pytest.raises(ValueError, match=r"test_labels must have shape \(120,\)"):
        knn_accuracy(train, labels, test, torch.zeros(119, dtype=torch.long))


def test_pixel_features_are_flat_unit_range_floats():
    images = torch.randint(0, 256, (6, 3, 4, 5), dtype=torch.uint8)
    images[0, 0, 0, 0], images[1, 0, 0, 0] = 0, 255
    feats = pixel_features(images)
    assert feats.shape == (6, 60) and feats.dtype == torch.float32
    assert feats.min() == 0.0 and feats.max() == 1.0
    torch.testing.assert_close(feats[2].reshape(3, 4, 5) * 255, images[2].float())
    with pytest.raises(ValueError, match="expects uint8"):
        pixel_features(images.float())


def _read_idx(name: str, offset: int, count: int, item_bytes: int) -> np.ndarray:
    with gzip.open(FASHION_MNIST / name) as f:
        data = f.read(offset + count * item_bytes)
    return np.frombuffer(data, dtype=np.uint8, offset=offset)


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="Fashion-MNIST files not installed")
def test_knn_accuracy_fashion_mnist_raw_pixels_5nn():
    # Raw-pixel 5-NN reaches ~85 % on the full data; 10k train / 2k test gives ~80 %.
    x_train = _read_idx("train-images-idx3-ubyte.gz", 16, 10_000, 784).reshape(-1, 1, 28, 28)
    y_train = _read_idx("train-labels-idx1-ubyte.gz", 8, 10_000, 1)
    x_test = _read_idx("t10k-images-idx3-ubyte.gz", 16, 2_000, 784).reshape(-1, 1, 28, 28)
    y_test = _read_idx("t10k-labels-idx1-ubyte.gz", 8, 2_000, 1)
    acc = knn_accuracy(
        pixel_features(torch.from_numpy(x_train.copy())),
        torch.from_numpy(y_train.astype(np.int64)),
        pixel_features(torch.from_numpy(x_test.copy())),
        torch.from_numpy(y_test.astype(np.int64)),
        k=5,
    )
    print(f"Fashion-MNIST raw-pixel 5-NN, 10k train / 2k test: {acc:.2f}%")
    assert 75.0 < acc < 92.0


def mirrored_near_ties(n_test=60, seed=0):
    """Each test point has its own plane; in it, 4 class-0 samples at angles a_i from the point and 4
    class-1 samples at -(a_i + e): weighted votes tied exactly (e = 0, every 4th point) or within a factor
    1 + ~1e-5..1e-2 of a tie, around the certification margin of the float32 approximations."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.tensor([0.05, 0.2, 0.35, 0.5])
    train, labels, test = torch.zeros(8 * n_test, 2 * n_test), [], torch.zeros(n_test, 2 * n_test)
    for t in range(n_test):
        e = 0.0 if t % 4 == 0 else float((torch.rand(1, generator=g) - 0.5) * 10 ** -(1 + 3 * t % 4))
        for j, a in enumerate(torch.cat([angles, -(angles + e)])):
            train[8 * t + j, 2 * t : 2 * t + 2] = torch.stack([a.cos(), a.sin()])
        labels += [0] * 4 + [1] * 4
        test[t, 2 * t] = 1.0
    return train, torch.tensor(labels), test


def exact_weighted_reference(train, labels, test, k, temperature):
    """The rule without guards: float64 dots of the float32 unit vectors, ranked by float32 value then index,
    votes exp((s - s_max) / T) summed in rank order, exact ties to the nearest-ranked class."""
    x = torch.nn.functional.normalize(train.float(), dim=1).double()
    q = torch.nn.functional.normalize(test.float(), dim=1).double()
    sims = q @ x.T
    preds = []
    for row in sims:
        order = sorted(range(len(row)), key=lambda j: (-float(row[j].float()), j))[:k]
        votes: dict[int, float] = {}
        for j in order:
            c = int(labels[j])
            votes[c] = votes.get(c, 0.0) + math.exp((row[j].item() - row[order[0]].item()) / temperature)
        best = max(votes.values())
        preds.append(next(int(labels[j]) for j in order if votes[int(labels[j])] == best))
    return torch.tensor(preds)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_weighted_near_ties_match_exact_rule(precision):
    train, labels, test = mirrored_near_ties()
    got = knn_predict(train, labels, test, 8, 2, weighted=True, temperature=0.07, precision=precision)
    want = exact_weighted_reference(train, labels, test, 8, 0.07)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert (want == 0).any() and (want == 1).any()


def test_vote_certification_holds_for_any_error_within_the_bound(monkeypatch):
    # The certified vote may only trust approximations that no error within +-delta could flip: push every
    # approximate similarity to the edge of its bound, in random directions, and expect the exact result.
    train, labels, test = mirrored_near_ties(seed=1)
    search_chunk = knn_search.Search._search
    g = torch.Generator().manual_seed(0)

    def worst_case(self, q):
        out = []
        for m in search_chunk(self, q):
            sign = torch.randint(0, 2, m.approx.shape, generator=g).double() * 2 - 1
            out.append(m._replace(approx=m.approx + sign * m.delta[:, None]))
        return tuple(out)

    monkeypatch.setattr(knn_search.Search, "_search", worst_case)
    for weighted in (True, False):
        got = knn_predict(train, labels, test, 8, 2, weighted=weighted, temperature=0.07, precision="fp32")
        if weighted:
            torch.testing.assert_close(
                got, exact_weighted_reference(train, labels, test, 8, 0.07), rtol=0, atol=0
            )
        else:  # 4-4 ties everywhere: the class of the nearest-ranked neighbour
            torch.testing.assert_close(got, reference_knn_ties(train, labels, test, 8), rtol=0, atol=0)


def reference_knn_ties(train, labels, test, k):
    x = torch.nn.functional.normalize(train.float(), dim=1).double()
    q = torch.nn.functional.normalize(test.float(), dim=1).double()
    order = (q @ x.T).float().sort(dim=1, descending=True, stable=True).indices[:, :k]
    counts = torch.zeros(len(test), int(labels.max()) + 1).scatter_add_(
        1, labels[order], torch.ones(order.shape)
    )
    tied = counts == counts.max(dim=1, keepdim=True).values
    return torch.stack([labels[o][tied[i][labels[o]]][0] for i, o in enumerate(order)])


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_one_search_for_both_evaluation_votes_equals_separate_calls(random_data, precision):
    train, labels, test = random_data
    votes = [(5, False), (100, True), (20, True)]
    got = knn_predict_votes(
        train, labels, test, votes, 4, temperature=0.5, chunk_size=50, precision=precision
    )
    for (k, weighted), preds in zip(votes, got, strict=True):
        torch.testing.assert_close(
            preds, knn_predict(train, labels, test, k, 4, weighted, 0.5), rtol=0, atol=0
        )
        torch.testing.assert_close(
            preds, reference_knn(train, labels, test, k, 4, weighted, 0.5), rtol=0, atol=0
        )
    accs = knn_accuracies(train, labels, test, labels[:120], votes, temperature=0.5)
    assert accs == [knn_accuracy(train, labels, test, labels[:120], k, w, 0.5) for k, w in votes]


def test_similarity_blocks_are_bounded_and_change_no_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(3000, 16, generator=g), torch.randn(500, 16, generator=g)
    labels = torch.randint(0, 10, (3000,), generator=g)
    want = knn_predict(train, labels, test, k=20, num_classes=10)
    monkeypatch.setattr(knn_search, "BLOCK_ELEMENTS", 3000 * 7)  # 7 queries per similarity block
    assert knn_search.Search(train, [20]).chunk_size == 7
    # the same predictions, block by block: the search certifies each query's neighbours against a proven
    # bound and recomputes uncertain rows in float64, so the result is the float64 rule whatever the GEMM
    # shapes (equality is that rule's guarantee, not a replayed computation)
    assert torch.equal(knn_predict(train, labels, test, k=20, num_classes=10), want)
