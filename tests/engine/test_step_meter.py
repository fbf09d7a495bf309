"""`StepMeter`: the Trainer's per-step values stay on the device until read, and the first step whose
loss was not finite is found there, with its values."""

from __future__ import annotations

import math

import torch

from compmod.engine.metrics import StepMeter


def test_sums_last_values_and_the_first_non_finite_step() -> None:
    meter = StepMeter()
    for step, loss in enumerate([1.0, 2.0, float("nan"), float("inf"), 3.0]):
        meter.add(step, {"loss": torch.tensor(loss), "mcr": torch.tensor(step * 0.5), "lambda": 0.25})
    last, sums, bad, values = meter.read()
    assert last == {"loss": 3.0, "mcr": 2.0, "lambda": 0.25}
    assert math.isnan(sums["loss"]) and sums["mcr"] == 5.0 and sums["lambda"] == 1.25
    assert bad == 2 and math.isnan(values["loss"]) and values["mcr"] == 1.0  # the first one, not step 3
    meter.reset()
    meter.add(7, {"loss": torch.tensor(0.5)})
    assert meter.read()[2] == -1  # all finite


def test_adding_a_step_never_reads_the_device(monkeypatch) -> None:
    # .item(), .tolist() and bool() of a tensor are the host reads; add() must use none of them
    meter = StepMeter()
    meter.add(0, {"loss": torch.tensor(1.0)})

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was read on the host")

    for name in ("item", "tolist", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for step in range(1, 4):
        meter.add(step, {"loss": torch.tensor(float(step)), "hypergrad_norm": torch.tensor(2.0)})
    monkeypatch.undo()
    assert meter.read()[1]["loss"] == 7.0
