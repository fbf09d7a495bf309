"""The online linear probe (engine/online_probe.py): it learns from h without touching the encoder's
training, skips unlabelled rows, resumes exactly, and lands in metrics.jsonl and results.json."""

from __future__ import annotations

import json

import torch
from tests.helpers import requires_fmnist

from compmod.config import load_config
from compmod.engine.builders import build_train_step
from compmod.engine.checkpoint import load_checkpoint
from compmod.engine.online_probe import OnlineProbe
from compmod.engine.run import train_and_evaluate
from compmod.engine.trainer import checkpoint_path

SMALL = [
    "method.proj_hidden_dim=64",
    "method.proj_dim=32",
    "train.progress=false",
    "train.threads=1",
    "train.batch_size=32",
    "data.subset=128",
    "eval.train_subset=256",
    "eval.test_subset=200",
    "eval.linear=false",
    "eval.pixel_knn=false",
]


def test_the_probe_leaves_the_encoders_training_bit_identical() -> None:
    """The same steps replayed with and without the probe: every weight of the method is equal."""
    cfg = load_config(None, ["compmod.enabled=true", "method.proj_hidden_dim=64", "method.proj_dim=32"])
    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(16, 1, 28, 28, generator=g) for _ in range(2))
    labels = torch.randint(0, 10, (16,), generator=g)
    steps, rng_after = [], []
    for classes in (None, 10):
        torch.manual_seed(0)
        steps.append(build_train_step(cfg, 1, 28, torch.device("cpu"), 10, num_classes=classes))
        rng_after.append(torch.get_rng_state())  # building the probe draws nothing from the global stream
        for i in range(3):
            steps[-1].step(x1, x2, 0.1, (i + 1) / 3, labels)
    assert steps[0].probe is None and steps[1].probe is not None
    assert torch.equal(rng_after[0], rng_after[1])
    for a, b in zip(
        steps[0].method.state_dict().values(), steps[1].method.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_unlabelled_rows_are_left_out_of_the_loss() -> None:
    g = torch.Generator().manual_seed(2)
    h = (torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g))
    probe = OnlineProbe(8, 3, lr=0.1, base_lr=0.1, device=torch.device("cpu"), seed=0)
    before = probe.head.weight.clone()
    assert probe.step(h, torch.full((4,), -1), 0.1).item() == 0.0  # no labelled row: 0, not 0/0
    assert torch.equal(probe.head.weight, before)
    fresh = OnlineProbe(8, 3, lr=0.1, base_lr=0.1, device=torch.device("cpu"), seed=0)  # the same head
    labels = torch.tensor([0, -1, 2, -1])
    target = torch.cat([labels, labels])
    with torch.no_grad():  # the mean over the 4 labelled rows of both views, before the step
        expected = torch.nn.functional.cross_entropy(
            fresh.head(torch.cat(h))[target >= 0], target[target >= 0]
        )
    torch.testing.assert_close(fresh.step(h, labels, 0.1), expected)


@requires_fmnist
def test_online_accuracy_is_logged_every_epoch_reported_and_resumed_exactly(tmp_path) -> None:
    straight = train_and_evaluate(
        load_config(None, [*SMALL, "train.epochs=2", f"train.run_dir={tmp_path / 'a'}"])
    )
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    per_epoch = [r["epoch_online_linear_top1"] for r in records if "epoch_online_linear_top1" in r]
    assert len(per_epoch) == 2 and per_epoch[-1] == straight["online_linear_top1"]
    assert straight["online_linear_top1"] > 20.0  # 10 classes: chance is 10 %
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["online_linear_top1"] == straight["online_linear_top1"]
    # one epoch, then resumed for the second: the same head, the same accuracy
    b = [*SMALL, f"train.run_dir={tmp_path / 'b'}"]
    train_and_evaluate(load_config(None, [*b, "train.epochs=2", "train.max_steps=4"]))
    resumed = train_and_evaluate(load_config(None, [*b, "train.epochs=2"]), resume=True)
    assert resumed["online_linear_top1"] == straight["online_linear_top1"]
    heads = [load_checkpoint(checkpoint_path(tmp_path / r))["online_probe"]["head"] for r in ("a", "b")]
    for key in heads[0]:
        assert torch.equal(heads[0][key], heads[1][key])
