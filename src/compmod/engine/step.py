"""One training step, shared by the Trainer and the benchmarks: forward (+ lambda1 L_mcr), backward,
CompMod's meta step (its look-ahead is this optimiser's own next step, `optim.tentative_step`), optimiser
step; with the speed options of `train` (precision, channels_last, torch.compile).

Speed options and their defaults (measured with `make bench`, see benchmarks/results):
- precision fp32 | bf16 | fp16 | auto: autocast around the method's forward only; auto is bf16 where the
  device computes it natively (`hardware.native_bf16`: AVX512-BF16/AMX CPUs, CUDA GPUs with bf16), else
  fp32. Every SSL loss runs in fp32 whatever the autocast (`losses/precision.py`), CompMod's losses too
  (`losses/mec.py`), and so does the meta step (its look-ahead and JVP are exact
  fp32 computations). fp16 uses a GradScaler; gradients are unscaled before the meta step, which reads
  them, and a step whose gradients overflowed skips the meta update as the scaler skips the optimiser.
  fp32 is the default on every device: bf16 changes the numerics, and on CPUs without native bf16 it
  made a step 13-21x slower; with AVX512-BF16 (this project's CPU) it measured 2.3x faster
  (benchmarks/results/step.md), so it is worth trying there.
- channels_last: NHWC weights and inputs. `None` picks `hardware.CHANNELS_LAST_DEFAULT`.
- compile: torch.compile of the real forward (the meta step calls the uncompiled module statelessly).
Under torchrun the real forward goes through DistributedDataParallel; the meta step calls the bare module.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from compmod.engine.ddp import wrap
from compmod.engine.online_probe import OnlineProbe
from compmod.engine.optim import tentative_step
from compmod.errors import ConfigError
from compmod.hardware import native_bf16, resolve_channels_last
from compmod.methods.base import SSLMethod
from compmod.regularizers.compmod import CompMod

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainStep:
    """`step(x1, x2, lr, progress)`: one training step, read top to bottom in one function; the
    optimiser's learning rate is set to `lr` for it. The Trainer and the benchmarks call the same."""

    def __init__(
        self,
        method: SSLMethod,
        optimizer: torch.optim.Optimizer,
        compmod: CompMod | None = None,
        *,
        probe: OnlineProbe | None = None,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        channels_last: bool | None = None,
        compile: bool = False,  # noqa: A002 - the config key's name
    ) -> None:
        if precision not in (*PRECISIONS, "auto"):
            raise ConfigError(
                f"config key train.precision: {precision!r} is not accepted; expected one of "
                f"auto, {', '.join(PRECISIONS)}"
            )
        self.device = torch.device(device)
        if precision == "auto":  # bf16 where the device computes it natively, else fp32
            precision = "bf16" if native_bf16(self.device) else "fp32"
        self.precision = precision
        self.method, self.optimizer, self.compmod, self.probe = method, optimizer, compmod, probe
        self.lookahead = tentative_step(optimizer)  # CompMod's look-ahead: this optimiser's next step
        self.autocast_dtype = PRECISIONS[precision]
        self.channels_last = resolve_channels_last(channels_last, self.device)
        if self.channels_last:
            method.to(memory_format=torch.channels_last)
        wrapped = wrap(method, self.device)  # DDP under torchrun (its reducer averages the gradients)
        self.forward_module: Callable[..., Any] = torch.compile(wrapped) if compile else wrapped
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A view batch in the layout the model was put in."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def step(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        lr: float,
        progress: float = 0.5,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """One training step on the two views, top to bottom; returns the total loss (method + lambda1
        L_mcr, detached) and its named parts (0-d tensors, on the device: nothing here waits for it).
        With `labels` (this rank's rows; -1: unlabelled) the online probe, if any, takes a step on h.

        A non-finite loss is not checked here (that would make the host wait for the device on every
        step): the Trainer's `StepMeter` finds the first such step on the device and the Trainer reports
        it before any checkpoint is written. `progress` in [0, 1] drives the after-step hooks (EMA)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast():  # forward and the method's loss
            out = self.forward_module(x1, x2)
        total, parts = _fp32(out.loss), dict(out.parts)
        reg = None
        if self.compmod is not None:  # + lambda1 L_mcr; xi held fixed, the context kept for its meta step
            reg = self.compmod.regularize(tuple(map(_fp32, out.h)), tuple(map(_fp32, out.z)))  # type: ignore[arg-type]
            total = total + reg.loss
            parts.update(reg.parts)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            total.backward()
        else:  # fp16: scaled backward, then true gradients for the meta step to read
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        if reg is not None and (self.scaler is None or _grads_finite(self.method)):  # fp16 overflow: skip
            parts.update(self.compmod.meta_step(self.method, x1, x2, lr, reg.context, self.lookahead))  # type: ignore[union-attr]
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.method.after_optimizer_step(progress)  # EMA teachers, queues, counters
        if self.probe is not None and labels is not None:  # reads the detached h: nothing flows back
            parts["online_linear_loss"] = self.probe.step(out.h, labels, lr)
        return total.detach(), parts

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


def _fp32(t: torch.Tensor) -> torch.Tensor:
    """Half-precision autocast outputs up to fp32; fp32 and fp64 stay as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _grads_finite(module: torch.nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return bool(torch.stack([g.float().abs().amax() for g in grads]).isfinite().all()) if grads else True
