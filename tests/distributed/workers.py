"""What each process computes in the data-parallel tests; the same functions give the single-process
reference when no process group is initialised (every collective is then the identity)."""

from __future__ import annotations

from typing import Any

import torch
from tests.helpers import method_overrides

from compmod.config import load_config
from compmod.distributed import local_rows
from compmod.engine.builders import build_compmod, build_method
from compmod.engine.ddp import wrap
from compmod.meta.functional import trainable
from compmod.models.sync_batchnorm import convert_sync_batchnorm

BATCH, SIZE, HIDDEN, PROJ = 16, 12, 32, 16  # BATCH is the global batch


def global_views(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(BATCH, 1, SIZE, SIZE, generator=g, dtype=torch.float64) for _ in range(2))


def build(name: str, *extra: str):
    """The method `name` (small, float64, BatchNorm synchronised over ranks) and its config."""
    cfg = load_config(
        None,
        [
            *method_overrides(name),
            f"method.proj_hidden_dim={HIDDEN}",
            f"method.proj_dim={PROJ}",
            f"train.batch_size={BATCH}",
            *extra,
        ],
    )
    torch.manual_seed(0)
    method = convert_sync_batchnorm(build_method(cfg, 1, SIZE)).double().train()
    return method, cfg


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in trainable(module).items() if p.grad is not None}


def method_loss_and_grads(names: list[str]) -> dict[str, Any]:
    """Per method: the loss of this rank's share of the global batch (through DDP when distributed) and
    the parameter gradients after backward (DDP-averaged)."""
    x1, x2 = global_views()
    rows = local_rows(BATCH)
    out: dict[str, Any] = {}
    for name in names:
        method, _ = build(name)
        model = wrap(method, torch.device("cpu"))
        step = model(x1[rows], x2[rows])
        step.loss.backward()
        out[name] = {"loss": step.loss.detach(), "grads": _grads(method)}
    return out


def three_steps(name: str, extra: list[str]) -> dict[str, Any]:
    """Three SGD steps of `name` (+ CompMod jvp) with the method's after-step hook (EMA teachers, queues,
    step counters): the loss of each step and the final state (parameters and buffers)."""
    x1, x2 = global_views()
    rows = local_rows(BATCH)
    method, cfg = build(name, "compmod.enabled=true", *extra)
    reg = build_compmod(cfg, method, steps_per_epoch=10)
    assert reg is not None
    reg.to(dtype=torch.float64)
    model = wrap(method, torch.device("cpu"))
    opt = torch.optim.SGD(list(trainable(method).values()), lr=0.05, momentum=0.9)
    losses = []
    for i in range(3):
        a, b = x1[rows] * (1 + 0.1 * i), x2[rows] * (1 - 0.1 * i)  # a new batch each step
        step = model(a, b)
        r = reg.regularize(step.h, step.z)
        total = step.loss + r.loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        reg.meta_step(method, a, b, 0.05, r.context)
        opt.step()
        method.after_optimizer_step((i + 1) / 3)
        losses.append(total.detach())
    state = {k: v.detach().clone() for k, v in method.state_dict().items()}
    head = {k: v.detach().clone() for k, v in reg.head.state_dict().items()}
    return {"losses": torch.stack(losses), "state": state, "head": head}


def compmod_hypergrads(names: list[str], mode: str, fusion: str) -> dict[str, Any]:
    """Per method: CompMod's real-step loss (L_ssl + lambda1 L_mcr), the model gradients after backward,
    and the xi-hypergradient of `mode`, for this rank's share of the global batch."""
    x1, x2 = global_views()
    rows = local_rows(BATCH)
    out: dict[str, Any] = {}
    for name in names:
        method, cfg = build(
            name, "compmod.enabled=true", f"compmod.meta.mode={mode}", f"compmod.fusion={fusion}"
        )
        reg = build_compmod(cfg, method, steps_per_epoch=10)
        assert reg is not None
        reg.to(dtype=torch.float64)
        model = wrap(method, torch.device("cpu"))
        a, b = x1[rows], x2[rows]
        step = model(a, b)
        r = reg.regularize(step.h, step.z)
        total = step.loss + r.loss
        total.backward()
        hyper = reg.hypergradient(method, a, b, 0.1, r.context)
        out[name] = {"loss": total.detach(), "grads": _grads(method), "hyper": [g.detach() for g in hyper]}
    return out


def batchnorm_all_orders(x: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """SyncBatchNorm2d on this rank's rows of the global (N, C, H, W) batch `x`: output, input gradient of
    sum(y * w), the tangent of y along `t` (forward mode), a double-backward term, and running stats."""
    from torch.func import jvp

    from compmod.models.sync_batchnorm import SyncBatchNorm

    rows = local_rows(x.shape[0])
    torch.manual_seed(0)
    bn = SyncBatchNorm(x.shape[1]).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    w = torch.linspace(-1, 1, x[0].numel(), dtype=x.dtype).view_as(x[0])
    xl = x[rows].clone().requires_grad_()
    y = bn(xl)
    (gx,) = torch.autograd.grad((y * w).sum(), xl, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.pow(2).sum(), xl)

    def fresh_buffers(a: torch.Tensor) -> torch.Tensor:  # as the meta step's stateless passes do
        return torch.func.functional_call(bn, {n: b.clone() for n, b in bn.named_buffers()}, (a,))

    _, ty = jvp(fresh_buffers, (x[rows],), (t[rows],))
    return {
        "y": y.detach(),
        "gx": gx.detach(),
        "ggx": ggx,
        "ty": ty,
        "running_mean": bn.running_mean.clone(),
        "running_var": bn.running_var.clone(),
    }
