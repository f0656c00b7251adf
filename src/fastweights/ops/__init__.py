"""Fast-weight recurrences as pure functions over batch-first tensors.

Conventions (every op): ``q, k, v [B, T, H, D]``, ``beta [B, T, H]``; fast matrices are key-major
``S [B, H, K, V]`` with write ``S <- S + beta k (v - S^T k)^T`` (old value read before the write) and read
``o = S^T q`` (after the write of the same step). ``reset`` (bool ``[B, T]``) zeroes the whole state before
step ``t``. Ops return ``(output, final_state)``; ``final_state`` is None unless ``output_final_state=True``.
Inputs that do not depend on the recurrence arrive activated; activations that do happen inside the op.
State and accumulation are at least float32; outputs come back in the input dtype; nothing is mutated
in place; gradients reach every input and the initial state.

Each op has several implementations with the same signature (``impl=``; see
:func:`available_implementations`): ``"reference"`` is a plain step loop, the float64 test oracle.

Each op lives in its own package ``ops/<op>/``: the public function and its :class:`~.common.spec.OpSpec` in
``__init__.py``, the step loop in ``naive.py`` and one file per further implementation (``chunked.py``,
``checkpointed.py``, ``compiled.py`` for numba, ``triton.py``), each registering itself; what several ops share
is in :mod:`fastweights.ops.common`. ``docs/extending.md`` walks through adding one.
"""

from . import feature_maps
from .common.checks import check_reset, set_value_checks
from .common.registry import available_implementations
from .common.spec import SPECS, OpSpec
from .delta_delta import delta_delta
from .delta_lstm import delta_lstm
from .delta_mlp import delta_mlp
from .delta_rnn import delta_rnn
from .delta_rule import delta_rule
from .feature_maps import (
    dpfp,
    elu_plus_one,
    elu_sum_norm,
    favor_plus,
    orthogonal_gaussian_projection,
    softmax,
    sum_norm,
)
from .rec_delta import rec_delta
from .states import DeltaDeltaState, DeltaLSTMState, DeltaRNNState, RecDeltaState
from .sum_rule import sum_rule
from .triton import set_triton_check

__all__ = [
    "SPECS", "DeltaDeltaState", "DeltaLSTMState", "DeltaRNNState", "OpSpec", "RecDeltaState",
    "available_implementations", "check_reset", "delta_delta", "delta_lstm", "delta_mlp", "delta_rnn", "delta_rule",
    "dpfp", "elu_plus_one", "elu_sum_norm", "favor_plus", "feature_maps", "orthogonal_gaussian_projection",
    "rec_delta", "set_triton_check", "set_value_checks", "softmax", "sum_norm", "sum_rule",
]
