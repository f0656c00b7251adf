"""LSTM baseline layer (wraps ``nn.LSTM``) with per-step resets."""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from .base import SequenceLayer, check_positive_int


class LSTMState(NamedTuple):
    """``nn.LSTM``'s state, in its own layout: ``h, c [num_layers, B, hidden_size]``."""

    h: Tensor
    c: Tensor


def run_lstm(lstm: nn.LSTM, x: Tensor, state: tuple[Tensor, Tensor] | None, reset: Tensor | None
             ) -> tuple[Tensor, LSTMState]:
    """Run a batch-first ``nn.LSTM`` over ``x [B, T, N_in]`` from ``state`` (None = zeros) with resets.

    ``reset`` (bool ``[B, T]``) zeroes the (h, c) of a row before step t. The sequence is cut at the steps where
    some row resets and ``nn.LSTM`` runs once per piece (cuDNN-fast when resets are rare), so the result
    equals independent runs of every episode.
    Returns ``(out [B, T, hidden], LSTMState(h, c))``.
    """
    B, T, _ = x.shape
    if state is None:
        zeros = x.new_zeros(lstm.num_layers, B, lstm.hidden_size)
        state = (zeros, zeros)
    elif not isinstance(state, tuple) or len(state) != 2:
        raise TypeError(f"state: expected an LSTMState (h, c), got {type(state).__name__}")
    want = (lstm.num_layers, B, lstm.hidden_size)
    for name, t in zip(("h", "c"), state):
        if not isinstance(t, Tensor) or tuple(t.shape) != want:
            got = f"shape {list(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"state.{name}: expected shape [num_layers, B, hidden] = {list(want)}, got {got}")
        if t.dtype != x.dtype or t.device != x.device:
            raise ValueError(f"state.{name}: expected dtype {x.dtype} on {x.device} (as x), "
                             f"got {t.dtype} on {t.device}")
    h, c = state
    if reset is None:
        out, (h, c) = lstm(x, (h, c))
        return out, LSTMState(h, c)
    cuts = reset.any(0).nonzero().flatten().tolist()  # one host sync: the piece boundaries
    bounds = sorted({0, T, *cuts})
    outs = []
    for start, end in pairwise(bounds):
        keep = (~reset[:, start]).to(h.dtype)[None, :, None]
        out, (h, c) = lstm(x[:, start:end], (h * keep, c * keep))
        outs.append(out)
    return torch.cat(outs, dim=1), LSTMState(h, c)


class LSTM(SequenceLayer):
    """LSTM layer ``[B, T, d_model] -> [B, T, d_model]``, the registry's ``lstm`` (a layer in residual blocks, as in
    the language model). The paper's LSTM baselines are built without blocks: the algorithmic ``lstm`` model
    (:class:`fastweights.models.LSTMModel`, paper.md A.9) and the RL ``lstm`` core run ``nn.LSTM`` through
    :func:`run_lstm` directly.

    ``nn.LSTM(d_model, hidden_size, num_layers, batch_first=True)``; when ``hidden_size != d_model`` a bias-free
    Linear ``hidden_size -> d_model`` follows. ``num_heads``/``head_dim`` are accepted for a uniform constructor
    and ignored.

    State: :class:`LSTMState` ``(h, c)``, each ``[num_layers, B, hidden_size]`` (``nn.LSTM``'s layout).
    """

    STATE_TYPES: ClassVar[tuple[type, ...]] = (LSTMState,)

    def __init__(self, d_model: int, num_heads: int = 1, head_dim: int | None = None, *,
                 hidden_size: int | None = None, num_layers: int = 1) -> None:
        super().__init__()
        del num_heads, head_dim  # uniform constructor; an LSTM has no heads
        self.d_model = check_positive_int("d_model", d_model)
        self.hidden_size = check_positive_int("hidden_size", d_model if hidden_size is None else hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.lstm = nn.LSTM(self.d_model, self.hidden_size, self.num_layers, batch_first=True)
        self.out_proj = (nn.Linear(self.hidden_size, self.d_model, bias=False)
                         if self.hidden_size != self.d_model else None)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype | None = None) -> LSTMState:
        """Zero ``(h, c)``, each ``[num_layers, B, hidden_size]``."""
        batch_size = check_positive_int("batch_size", batch_size)
        pdev, pdt = self._param_device_dtype()
        z = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=pdev if device is None else device,
                        dtype=pdt if dtype is None else dtype)
        return LSTMState(z, z.clone())

    def _forward(self, x: Tensor, state: LSTMState | None, reset: Tensor | None) -> tuple[Tensor, LSTMState]:
        out, state = run_lstm(self.lstm, x, state, reset)
        if self.out_proj is not None:
            out = self.out_proj(out)
        return out, state
