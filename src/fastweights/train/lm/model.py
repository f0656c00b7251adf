"""The model of a run and its learning rate schedule."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from ...models.lm import LMConfig, paper_config
from ..config import LMTrainConfig
from ..schedule import warmup_cosine

# ----------------------------------------------------------------------------------------------------------------
# Model and learning rate
# ----------------------------------------------------------------------------------------------------------------


def lm_model_config(cfg: LMTrainConfig, vocab_size: int) -> LMConfig:
    """The :class:`LMConfig` of a run: :func:`paper_config` with the run's model fields."""
    return paper_config(cfg.model, vocab_size, **cfg.model_fields())


def lr_at(step: int, cfg: LMTrainConfig) -> float:
    """Learning rate of update ``step`` (0-based; paper.md E.1), as the official training loop sets it: update 0 at
    the full ``lr`` (that loop adjusts the rate only after its first update), then ``lr * step / warmup_steps``
    while ``step < warmup_steps``, then ``lr * (1 + cos(pi * step / max_steps)) / 2`` (``CosineAnnealingLR(T_max=
    max_steps)`` stepped with the global step)."""
    if step == 0:
        return cfg.lr
    if step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    return warmup_cosine(step, cfg.lr, 0, cfg.max_steps)


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0)) if math.isfinite(loss) else float("nan")


def _map_state(state: Any, fn) -> Any:
    """Apply ``fn`` to every tensor of a (nested tuple / named tuple) model state."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_map_state(s, fn) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_map_state(s, fn) for s in state)
    return state
