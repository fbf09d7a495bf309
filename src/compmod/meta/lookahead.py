"""The look-ahead of the bi-level update: the real optimiser's tentative step, linear in the gradient.

Eq. 9's omega' is "the update of Eq. 8", i.e. what the optimiser would do with the real step's gradient g.
Every optimiser compmod trains with takes, per parameter w, a step of the form

    w' = w - shift - scale * g            (scale a number or an elementwise tensor)

once its step sizes are held constant: SGD with momentum m and decay wd has shift = lr (m buf + wd w),
scale = lr; LARS multiplies the decayed gradient by a per-layer trust ratio s (computed from |w| and |g|),
so scale = lr s and shift = lr (m buf + s wd w); AdamW's scale is lr / (sqrt(v_hat) + eps) per element.
`shift` and `scale` are computed from the optimiser's state and g at the current xi and then held constant
in xi (as one holds the learning rate constant): the hypergradient differentiates w' through g only. The
optimiser's state is read, never written. `Lookahead.plain(r)` is Eq. 9 as written: w' = w - r g.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Lookahead:
    """w' = w - shift - scale * g per parameter, in the order of `trainable(model)`. `shift` entries may be
    None (no shift); `scale` entries are floats or tensors broadcastable to the parameter."""

    shift: Sequence[Tensor | None]
    scale: Sequence[float | Tensor]

    @staticmethod
    def plain(r: float, count: int) -> Lookahead:
        """Eq. 9 as written: w' = w - r g for each of `count` parameters."""
        return Lookahead([None] * count, [r] * count)

    def point(self, omega: Mapping[str, Tensor], grads: Sequence[Tensor]) -> dict[str, Tensor]:
        """omega' for the gradients `grads` (differentiable in them, and in omega)."""
        if not len(omega) == len(grads) == len(self.scale) == len(self.shift):
            counts = f"{len(self.scale)} parameters applied to {len(omega)} with {len(grads)} gradients"
            raise ValueError(f"look-ahead for {counts}")
        out = {}
        for (name, w), g, shift, scale in zip(omega.items(), grads, self.shift, self.scale, strict=True):
            moved = w - scale * g
            out[name] = moved if shift is None else moved - shift
        return out

    def scaled(self, vectors: Sequence[Tensor]) -> list[Tensor]:
        """scale * v per parameter: the direction in which omega' moves when g moves along v."""
        return [s * v for s, v in zip(self.scale, vectors, strict=True)]

    def max_scale(self) -> float:
        """The largest step size (for logging): max over parameters of max(scale)."""
        return max(float(s.max()) if isinstance(s, Tensor) else float(s) for s in self.scale)


TentativeStep = Callable[[Sequence[Tensor], Sequence[Tensor]], Lookahead]
"""(parameters, their real-step gradients) -> the optimiser's `Lookahead` (engine/optim.py builds one from
the optimiser)."""


def detached(values: Sequence[Tensor | float | None]) -> list:
    """Constants: tensors detached (step sizes are held constant in xi), others as they are."""
    return [v.detach() if isinstance(v, torch.Tensor) else v for v in values]
