"""`compmod plan`: steps and sizes from the config, memory measured by real steps and extrapolated."""

from __future__ import annotations

import pytest
from tests.helpers import run_cli

from compmod.config import load_config
from compmod.engine.plan import GiB, make_plan

SMALL = [
    "data.name=fashion_mnist",
    "model.backbone=small_cnn",
    "method.proj_hidden_dim=64",
    "method.proj_dim=32",
    "compmod.enabled=true",
    "train.batch_size=256",
    "train.epochs=3",
    "train.optimizer=lars",
]


def test_plan_counts_steps_and_measures_memory_per_image():
    cfg = load_config(None, SMALL)
    plan = make_plan(cfg, gpus=2, batches=(4, 16))
    assert (plan.images, plan.channels) == (60_000, 1)
    assert plan.steps_per_epoch == 60_000 // 256 and plan.steps == 3 * (60_000 // 256)
    assert plan.cache_bytes == 60_000 * 28 * 28
    # parameters + gradients + one LARS momentum buffer each: 3x the parameter bytes of the method
    n_params = sum(p.numel() for p in _method(cfg).parameters())
    assert plan.model_bytes == 3 * 4 * n_params
    # activations of a 28 px small-CNN image with CompMod's jvp: more than the image, far below 1 GiB
    assert 28 * 28 * 4 < plan.per_image < 2**30
    assert plan.per_device_batch == 128
    assert plan.predicted == plan.model_bytes + round(plan.per_image * 128)
    lines = plan.lines(2, gpu_memory=80.0)
    assert lines[-1].endswith("fits in 80 GiB per device")
    half = plan.predicted / GiB / 2
    assert plan.lines(2, gpu_memory=half)[-1].endswith(f"does NOT fit in {half:g} GiB per device")


def _method(cfg):
    from compmod.engine.builders import build_method

    return build_method(cfg, 1, 28)


def test_cli_plan_prints_the_plan_and_rejects_a_gpu_count_that_does_not_divide_the_batch():
    sets = [a for s in SMALL for a in ("--set", s)]
    done = run_cli("plan", *sets, "--gpus", "2", "--gpu-memory", "40")
    assert done.returncode == 0, done.stderr
    assert "steps per epoch" in done.stdout and "predicted peak: fits in 40 GiB per device" in done.stdout
    done = run_cli("plan", *sets, "--gpus", "3")
    assert done.returncode == 2
    assert "--gpus 3 is not accepted; expected a divisor of batch_size 256" in done.stderr


@pytest.mark.parametrize("gpus", [0, 5])
def test_make_plan_rejects_bad_gpu_counts(gpus):
    with pytest.raises(ValueError, match="--gpus"):
        make_plan(load_config(None, SMALL), gpus=gpus)
