"""Learning-rate schedules, as functions of the update index so that a resumed run needs no scheduler state."""

from __future__ import annotations

import math


def warmup_cosine(step: int, lr: float, warmup_steps: int, total_steps: int | None, *,
                  decay_after_warmup: bool = False) -> float:
    """Learning rate of update ``step`` (0-based): ``lr * (step + 1) / warmup_steps`` during the warm-up, then
    ``lr * (1 + cos(pi * step / total_steps)) / 2`` (PyTorch's ``CosineAnnealingLR(T_max=total_steps)`` stepped
    with the global step, as the paper's language-model training does), or ``lr`` when ``total_steps`` is None.
    ``decay_after_warmup``: the cosine starts at the end of the warm-up instead, ``lr * (1 + cos(pi * (step -
    warmup_steps) / (total_steps - warmup_steps))) / 2``, so that it starts from the peak however long the warm-up."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if total_steps is None:
        return lr
    start = warmup_steps if decay_after_warmup else 0
    span = max(total_steps - start, 1)
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step - start, span) / span))
