"""Learning-rate schedules, as functions of the update index so that a resumed run needs no scheduler state."""

from __future__ import annotations

import math


def warmup_cosine(step: int, lr: float, warmup_steps: int, total_steps: int | None) -> float:
    """Learning rate of update ``step`` (0-based): ``lr * (step + 1) / warmup_steps`` during the warm-up, then
    ``lr * (1 + cos(pi * step / total_steps)) / 2`` (PyTorch's ``CosineAnnealingLR(T_max=total_steps)`` stepped
    with the global step, as the paper's language-model training does), or ``lr`` when ``total_steps`` is None."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if total_steps is None:
        return lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
