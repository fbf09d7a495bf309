"""Checkpoints are atomic and never unpickle code."""

from __future__ import annotations

import pickle

import pytest
import torch

from compmod.engine import checkpoint as ckpt_mod
from compmod.engine.checkpoint import load_checkpoint, save_checkpoint
from compmod.errors import CheckpointError


def test_checkpoint_round_trip(tmp_path):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3, "config": {"a": [1, 2]}}
    path = save_checkpoint(state, tmp_path / "sub" / "last.pt")
    back = load_checkpoint(path)
    assert back["epoch"] == 3 and back["config"] == {"a": [1, 2]}
    torch.testing.assert_close(back["model"]["w"], state["model"]["w"])


def test_checkpoint_crash_while_writing_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {}, "epoch": 1}, path)

    def exploding_save(obj, f):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {}, "epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": _Payload(str(marker))}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_missing_or_foreign(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a compmod checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
