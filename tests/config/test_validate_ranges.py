"""Values that used to pass config validation and fail only after pretraining (or silently train something
else) are one-line ConfigErrors naming the key, the value and what is accepted, raised by `load_config`
before any work starts."""

from __future__ import annotations

import pytest

from compmod.config import load_config
from compmod.errors import ConfigError

BAD = [
    (["train.log_every=0"], "config key train.log_every: 0 is not accepted; expected an integer >= 1"),
    (["method.proj_dim=0"], "config key method.proj_dim: 0 is not accepted; expected an integer >= 1"),
    (["method.proj_layers=0"], "config key method.proj_layers: 0 is not accepted; expected an integer >= 1"),
    (["method.proj_hidden_dim=0"], "config key method.proj_hidden_dim: 0 is not accepted"),
    (["compmod.eps_sq=.inf"], "config key compmod.eps_sq: inf is not accepted; expected a finite number"),
    (["train.lr=.nan"], "config key train.lr: nan is not accepted; expected a finite number"),
    (["method.temperature=.inf"], "config key method.temperature: inf is not accepted"),
    (["augment.view1.crop_scale=[0.2, .inf]"], "config key augment.view1.crop_scale: inf is not accepted"),
    (
        ["train.seed=12345678901234567890123"],
        "config key train.seed: 12345678901234567890123 is not accepted; "
        "expected an integer in [0, 4294967295]",
    ),
    (["train.seed=-1"], "config key train.seed: -1 is not accepted"),
    (
        ["train.device=cuda:abc"],
        "config key train.device: 'cuda:abc' is not accepted; expected auto, cpu, mps",
    ),
    (["train.device=cuda:1a"], "config key train.device: 'cuda:1a' is not accepted"),
    (
        ["train.run_dir=/dev/null"],
        "config key train.run_dir: '/dev/null' is not accepted; it is not a directory",
    ),
    (["train.run_dir=/dev/null/run"], "it is inside '/dev/null', which is not a directory"),
    (["train.run_dir=''"], "config key train.run_dir: '' is not accepted; expected a directory path"),
    (
        ["method.name=wmse", "train.batch_size=200"],
        "config key method.w_size: 128 is not accepted; expected a divisor of train.batch_size=200",
    ),
    (
        ["method.name=wmse", "method.whiten_eps=0", "method.w_size=256", "train.batch_size=64"],
        "config key method.whiten_eps: 0.0 is not accepted; expected > 0 when a sub-batch "
        "(min(w_size, train.batch_size) = 64 rows) is not larger than method.proj_dim=64",
    ),
    (
        ["eval.knn_temperature=0"],
        "config key eval.knn_temperature: 0.0 is not accepted; expected a float > 0",
    ),
    (["eval.batch_size=0"], "config key eval.batch_size: 0 is not accepted; expected an integer >= 1"),
    (
        ["eval.knn_weighted_k=0"],
        "config key eval.knn_weighted_k: 0 is not accepted; expected an integer >= 1",
    ),
    (["eval.linear_epochs=0"], "config key eval.linear_epochs: 0 is not accepted"),
    (["eval.linear_batch_size=0"], "config key eval.linear_batch_size: 0 is not accepted"),
    (["eval.train_subset=0"], "config key eval.train_subset: 0 is not accepted"),
    (["train.momentum=-5"], "config key train.momentum: -5.0 is not accepted; expected a float in [0, 1)"),
    (["train.momentum=1"], "config key train.momentum: 1.0 is not accepted"),
    (["train.lars.eta=0"], "config key train.lars.eta: 0.0 is not accepted; expected a float > 0"),
    (["train.lars.eps=-1"], "config key train.lars.eps: -1.0 is not accepted"),
    (["train.lars.clip_lr=true"], "config key train.lars.clip_lr: True is not accepted; expected false with"),
    (["train.lars.rule=lamb"], "train.lars.rule"),
    (
        ["train.min_lr_ratio=-1"],
        "config key train.min_lr_ratio: -1.0 is not accepted; expected a float in [0, 1]",
    ),
    (
        ["compmod.lambda_warmup_epochs=-1"],
        "config key compmod.lambda_warmup_epochs: -1.0 is not accepted; expected a float >= 0",
    ),
    (["compmod.order=3"], "config key compmod.order: 3 is not accepted; expected an even integer >= 2"),
    (["compmod.order=1"], "config key compmod.order: 1 is not accepted"),
    (["compmod.meta.momentum=1.5"], "config key compmod.meta.momentum: 1.5 is not accepted"),
    (["train.threads=0"], "config key train.threads: 0 is not accepted"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_is_a_one_line_config_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.momentum=0", "train.min_lr_ratio=1", "compmod.lambda_warmup_epochs=0", "compmod.order=2"],
        ["train.seed=4294967295", "train.device=cuda:1", "compmod.order=6"],
        ["method.name=wmse", "train.batch_size=256"],  # two sub-batches of 128
        ["method.name=wmse", "train.batch_size=32"],  # whitened whole, with the default shrinkage
        ["method.name=wmse", "method.whiten_eps=0", "method.w_size=128", "train.batch_size=256"],
    ],
)
def test_edge_values_are_accepted(overrides, tmp_path):
    load_config(None, [*overrides, f"train.run_dir={tmp_path / 'a' / 'b'}"])
