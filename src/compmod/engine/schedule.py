"""Pure learning-rate schedules: functions of the step, nothing stored."""

from __future__ import annotations

import math


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    min_lr: float = 0.0,
    start_lr: float | None = None,
) -> float:
    """Linear warm-up to base_lr over `warmup_steps`, then cosine to `min_lr` at `total_steps`.

    `step` counts from 0. The warm-up line has two published forms:

    * start_lr None (compmod's default): base_lr * (step + 1) / warmup_steps, the line of SimCLR's and FAIR
      barlowtwins' `adjust_learning_rate` (base_lr * step / warmup_steps) one step earlier, so the first step
      already moves and step warmup_steps - 1 is at base_lr;
    * start_lr a number: start_lr + step * (base_lr - start_lr) / (warmup_steps - 1), from start_lr at step 0
      to base_lr at step warmup_steps - 1, as solo-learn's `LinearWarmupCosineAnnealingLR`
      (solo/utils/lr_scheduler.py, from Lightning Bolts; `scheduler.warmup_start_lr`, default 3e-5, stepped
      per optimizer step). With warmup_steps 1 the single warm-up step is at start_lr.

    After warm-up both are min_lr + (base_lr - min_lr) (1 + cos(pi (step - warmup_steps) / (total_steps -
    warmup_steps))) / 2 (the closed form of Bolts' chained cosine), held at min_lr past total_steps.
    """
    if warmup_steps > 0 and step < warmup_steps:
        if start_lr is None:
            return base_lr * (step + 1) / warmup_steps
        if warmup_steps == 1:
            return start_lr
        return start_lr + step * (base_lr - start_lr) / (warmup_steps - 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
