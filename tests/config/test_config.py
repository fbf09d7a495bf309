"""Typed config: layering, round trip, and loud errors for unknown keys and wrong types."""

from __future__ import annotations

from pathlib import Path

import pytest

from compmod.config import config_from_dict, config_to_dict, dump_config, load_config
from compmod.config.load import apply_override
from compmod.errors import ConfigError


def test_config_defaults_resolve_method_params_and_preset():
    cfg = load_config(None, [])
    assert cfg.method.name == "simclr"
    assert hasattr(cfg.method.params, "temperature")
    assert cfg.augment.preset == "simclr"  # `auto` resolved to the method's preset


def test_config_overrides_parse_yaml_values():
    cfg = load_config(
        None,
        [
            "train.lr=1e-3",
            "train.epochs=3",
            "data.subset=null",
            "eval.enabled=false",
            "augment.ops=[crop, flip]",
            "method.name=barlow_twins",
            "method.lambda_offdiag=0.01",
        ],
    )
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3 and cfg.data.subset is None and cfg.eval.enabled is False
    assert cfg.augment.ops == ["crop", "flip"]
    assert cfg.method.params.lambda_offdiag == pytest.approx(0.01)


def test_config_yaml_file_then_cli_override(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 7\n  lr: 0.5\nmethod:\n  name: byol\n")
    cfg = load_config(f, ["train.lr=0.25"])
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.25 and cfg.method.name == "byol"
    assert cfg.augment.preset == "byol"


def test_config_round_trip_through_yaml_dict():
    cfg = load_config(None, ["method.name=byol", "augment.view1.blur_prob=0.3", "train.seed=4"])
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    assert "blur_prob: 0.3" in dump_config(cfg)


def test_config_unknown_key_suggests_the_closest():
    with pytest.raises(
        ConfigError, match=r"unknown config key train\.epoch \(did you mean train\.epochs\?\)"
    ):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(
        ConfigError, match=r"unknown config key method\.temprature.*did you mean method\.temperature"
    ):
        load_config(None, ["method.temprature=0.1"])
    with pytest.raises(ConfigError, match="unknown config key trian"):
        load_config(None, ["trian.epochs=3"])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.epochs=three", r"train\.epochs: expected an integer, got 'three'"),
        ("train.epochs=2.5", r"train\.epochs: expected an integer"),
        ("train.lr=fast", r"train\.lr: expected a number"),
        ("eval.enabled=1", r"eval\.enabled: expected true or false"),
        ("train.optimizer=adam", r"train\.optimizer: 'adam' is not accepted.*did you mean adamw"),
        ("augment.view1.crop_scale=0.5", r"augment\.view1\.crop_scale: expected a list of 2 values"),
        ("augment.ops=[crop, flop]", r"unknown op 'flop' \(did you mean flip\?\)"),
        ("train.epochs=0", r"train\.epochs: 0 is not accepted; expected an integer >= 1"),
        ("data.channels=2", r"data\.channels: 2 is not accepted"),
        ("method.name=simclr2", r"unknown method 'simclr2' \(did you mean simclr\?\)"),
        ("train.device=gpu", r"train\.device: 'gpu' is not accepted"),
    ],
)
def test_config_bad_values_name_the_key_and_what_is_accepted(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_config_section_given_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="override 'train.lr.x=1': train.lr is a value"):
        raw: dict = {}
        apply_override(raw, "train.lr=1")
        apply_override(raw, "train.lr.x=1")
    with pytest.raises(ConfigError, match="config key data: expected a section"):
        config_from_dict({"data": 3})


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(lst)


@pytest.mark.parametrize("path", sorted(Path("configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_config_every_preset_file_loads_and_round_trips(path):
    cfg = load_config(path)
    assert config_from_dict(config_to_dict(cfg)) == cfg
