"""Optimisers: SGD, LARS, AdamW, with weight decay off for biases and normalisation parameters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from compmod.config.schema import TrainConfig
from compmod.meta.lookahead import Lookahead, TentativeStep


def param_groups(
    modules: Iterable[nn.Module], weight_decay: float, exclude_bias_n_norm: bool = True
) -> list[dict]:
    """Two groups: weights that decay, and biases/normalisation parameters (ndim <= 1) that do not.

    With `exclude_bias_n_norm` the second group is also excluded from LARS adaptation (FAIR barlowtwins'
    `exclude_bias_and_norm`, solo-learn's `exclude_bias_n_norm`); without, LARS adapts it too.
    """
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for p in module.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": exclude_bias_n_norm},
    ]


RULES = ("fair", "solo")


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017) with heavy-ball momentum, in the two forms SSL code
    uses. Per parameter w with gradient g in a group with weight decay wd and learning rate lr:

    * rule "fair" (FAIR barlowtwins / vicreg `LARS`): d = g + wd w; d <- d eta |w| / |d| when both norms
      are > 0;
    * rule "solo" (solo-learn's `solo/utils/lars.py`, from Lightning Bolts): when |w| > 0 and |g| > 0,
      r = eta |w| / (|g| + wd |w| + eps), with `clip_lr` r <- min(r / lr, 1), and d = r (g + wd w); otherwise
      d = g (no decay either). With clipping the step lr r is min(eta |w| / (...), lr): the trust ratio
      never raises the scheduled rate;

    then m <- momentum m + d and w <- w - lr m. Groups with `lars_exclude` (biases and normalisation
    parameters, `param_groups`) skip the adaptation and the decay: d = g.
    `direction` gives d for a gradient without touching any state (CompMod's look-ahead reads it).
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
        rule: str = "fair",
        clip_lr: bool = False,
        eps: float = 1e-8,
    ):
        if rule not in RULES:
            raise ValueError(f"LARS rule {rule!r} is not accepted; choose one of {', '.join(RULES)}")
        if clip_lr and rule != "solo":
            raise ValueError("LARS clip_lr is part of the 'solo' rule; the 'fair' rule has no clipping")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, rule=rule, clip_lr=clip_lr, eps=eps
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def direction(self, p: torch.Tensor, grad: torch.Tensor, group: dict) -> torch.Tensor:
        """d for parameter `p` of `group` with gradient `grad` (see the class docstring)."""
        if group.get("lars_exclude", False):  # biases and norms: the plain gradient, no extra kernels
            return grad
        ratio, wd = self.trust(p, grad, group)
        return torch.addcmul(grad, wd, p).mul_(ratio)

    @torch.no_grad()
    def trust(self, p: torch.Tensor, grad: torch.Tensor, group: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, wd) with d = s (grad + wd p): the trust ratio (1 where not adapted) and the decay that applies,
        as 0-dim tensors on p's device (no host synchronisation)."""
        one = torch.ones((), dtype=p.dtype, device=p.device)
        if group.get("lars_exclude", False):
            return one, torch.zeros_like(one)
        wd, eta = group["weight_decay"], group["eta"]
        p_norm = torch.linalg.vector_norm(p)
        if group["rule"] == "fair":
            d_norm = torch.linalg.vector_norm(grad.add(p, alpha=wd))
            ok = (p_norm > 0) & (d_norm > 0)
            return torch.where(ok, eta * p_norm / d_norm, one), one * wd
        g_norm = torch.linalg.vector_norm(grad)
        ratio = eta * p_norm / (g_norm + wd * p_norm + group["eps"])
        if group["clip_lr"]:
            ratio = torch.clamp(ratio / group["lr"], max=1.0)
        ok = (p_norm > 0) & (g_norm > 0)  # otherwise solo-learn neither adapts nor decays
        return torch.where(ok, ratio, one), torch.where(ok, one * wd, 0 * one)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = self.direction(p, p.grad, group)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(group["momentum"]).add_(d_p)
                p.add_(mu, alpha=-group["lr"])
        return loss


def tentative_step(optimizer: torch.optim.Optimizer) -> TentativeStep:
    """CompMod's look-ahead as `optimizer`'s own next step (`meta/lookahead.py`), for SGD (momentum, weight
    decay, no Nesterov or dampening), LARS (either rule) and AdamW, read from its param groups and state
    (never written), with the step sizes of the current gradient held constant. A parameter the optimiser
    does not hold raises."""

    def step(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> Lookahead:
        where = {id(p): group for group in optimizer.param_groups for p in group["params"]}
        shifts, scales = [], []
        for p, g in zip(params, grads, strict=True):
            if id(p) not in where:
                raise ValueError(f"the optimiser does not train a parameter of shape {tuple(p.shape)}")
            shift, scale = _tentative(
                optimizer.state.get(p, {}), p.detach(), g.detach(), where[id(p)], optimizer
            )
            shifts.append(shift)
            scales.append(scale)
        return Lookahead(shifts, scales)

    return step


@torch.no_grad()
def _tentative(
    state: dict, p: torch.Tensor, g: torch.Tensor, group: dict, optimizer: torch.optim.Optimizer
) -> tuple[torch.Tensor | None, float | torch.Tensor]:
    """(shift, scale) of the next update p' = p - shift - scale g of p (its optimiser `state`)."""
    lr = group["lr"]
    if isinstance(optimizer, LARS):
        ratio, wd = optimizer.trust(p, g, group)
        shift = lr * ratio * wd * p
        buf = state.get("mu")
        if buf is not None and group["momentum"]:
            shift += lr * group["momentum"] * buf
        return shift, lr * ratio
    if isinstance(optimizer, torch.optim.AdamW):
        beta1, beta2 = group["betas"]
        t = int(state["step"]) + 1 if "step" in state else 1
        m = state.get("exp_avg", torch.zeros_like(p))
        v = state.get("exp_avg_sq", torch.zeros_like(p)) * beta2 + (1 - beta2) * g * g
        denom = (v / (1 - beta2**t)).sqrt_().add_(group["eps"])
        scale = lr * (1 - beta1) / ((1 - beta1**t) * denom)
        shift = lr * group["weight_decay"] * p + lr * beta1 * m / ((1 - beta1**t) * denom)
        return shift, scale
    if type(optimizer) is torch.optim.SGD and not group["nesterov"] and not group["dampening"]:
        wd, momentum, buf = group["weight_decay"], group["momentum"], state.get("momentum_buffer")
        shift = lr * wd * p if wd else None
        if buf is not None and momentum:
            shift = lr * momentum * buf + (0 if shift is None else shift)
        return shift, lr
    raise ValueError(f"no look-ahead rule for {type(optimizer).__name__}; use SGD, LARS or AdamW")


def build_optimizer(modules: Iterable[nn.Module], cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(modules, cfg.weight_decay, cfg.lars.exclude_bias_n_norm)
    if cfg.optimizer == "sgd":
        for g in groups:
            g.pop("lars_exclude")
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        for g in groups:
            g.pop("lars_exclude")
        return torch.optim.AdamW(groups, lr=cfg.lr)
    lars = cfg.lars
    return LARS(
        groups,
        lr=cfg.lr,
        momentum=cfg.momentum,
        eta=lars.eta,
        rule=lars.rule,
        clip_lr=lars.clip_lr,
        eps=lars.eps,
    )
