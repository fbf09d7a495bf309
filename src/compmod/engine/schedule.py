"""Pure learning-rate schedules: functions of the step, nothing stored."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0
) -> float:
    """Linear warm-up from base_lr/warmup_steps to base_lr over `warmup_steps`, then cosine to `min_lr`.

    As in SimCLR/BYOL/Barlow Twins (and FAIR's `adjust_learning_rate`); `step` counts from 0.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
