"""Config files: a key or section given twice, and files that are not UTF-8, are one-line errors."""

from __future__ import annotations

import pytest

from compmod.config import load_config
from compmod.config.yaml_loader import DuplicateKeyError, load_yaml
from compmod.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "train:\n  epochs: 1\n  lr: 0.1\n  epochs: 3\n",
            "duplicate key train.epochs at line 4 (first given at line 2)",
        ),
        (
            "train:\n  epochs: 1\ndata:\n  subset: 64\ntrain:\n  lr: 0.1\n",
            "duplicate section train at line 5 (first given at line 1)",
        ),
        (
            "augment:\n  view1: {crop_scale: [0.2, 1.0], crop_scale: [0.5, 1.0]}\n",
            "duplicate key augment.view1.crop_scale at line 2",
        ),
    ],
)
def test_duplicate_keys_and_sections_name_the_key_and_line(tmp_path, text, message):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_merge_keys_may_still_be_overridden():
    data = load_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert data["other"] == {"x": 3, "y": 2}
    with pytest.raises(DuplicateKeyError, match=r"duplicate key other\.x at line 5"):
        load_yaml("base: &b {x: 1}\nother:\n  <<: *b\n  x: 3\n  x: 4\n")


def test_duplicate_key_in_an_override_value_is_an_error():
    with pytest.raises(
        ConfigError, match=r"override 'augment.view1=\{flip_prob: 0.1, flip_prob: 0.2\}'.*duplicate"
    ):
        load_config(None, ["augment.view1={flip_prob: 0.1, flip_prob: 0.2}"])


def test_non_utf8_config_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  run_dir: runs/caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text: byte 0xe9 at offset 26") as err:
        load_config(path)
    assert str(path) in str(err.value)
