"""Memoryless baseline layer: a per-position linear map, the registry's ``feedforward`` (a layer in residual blocks).
The RL agent's ``feedforward`` core is no layer at all (its heads read the core input, paper.md B.3)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import SequenceLayer, check_bool, check_positive_int


class FeedForward(SequenceLayer):
    """Per-position Linear ``d_model -> d_model`` (no recurrence; ``reset`` has nothing to reset).

    ``num_heads``/``head_dim`` are accepted for a uniform constructor and ignored. State: ``()``.
    """

    def __init__(self, d_model: int, num_heads: int = 1, head_dim: int | None = None, *, bias: bool = False) -> None:
        super().__init__()
        del num_heads, head_dim  # uniform constructor; no heads
        self.d_model = check_positive_int("d_model", d_model)
        self.linear = nn.Linear(self.d_model, self.d_model, bias=check_bool("bias", bias))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> tuple[()]:
        """The empty state ``()``."""
        check_positive_int("batch_size", batch_size)
        return ()

    def _forward(self, x: Tensor, state: tuple[()] | None, reset: Tensor | None) -> tuple[Tensor, tuple[()]]:
        if state is not None and state != ():
            raise TypeError(f"state: the feed-forward layer has no state; expected None or (), got "
                            f"{type(state).__name__}")
        return self.linear(x), ()
