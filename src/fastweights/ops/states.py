"""Named state tuples of the multi-component recurrences (all key-major, batch-first)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class DeltaRNNState(NamedTuple):
    W: Tensor  # [B, H, K, V] feed-forward fast matrix
    R: Tensor  # [B, H, V, V] fast recurrent matrix
    y: Tensor  # [B, H, V] last output


class DeltaLSTMState(NamedTuple):
    W: Tensor  # [B, H, 3, K, V] fast matrices of the gates (input i, update u, output o)
    R: Tensor  # [B, H, 3, V, V] fast recurrent matrices of the gates
    y: Tensor  # [B, H, V] last output
    c: Tensor  # [B, H, V] cell


class RecDeltaState(NamedTuple):
    W: Tensor  # [B, H, D, D] fast matrix
    y: Tensor  # [B, H, D] last output


class DeltaDeltaState(NamedTuple):
    M: Tensor  # [B, H, D, 3D+1] slow-programmed fast programmer (level 1)
    W: Tensor  # [B, H, D, D] fast matrix it programs (level 2)
