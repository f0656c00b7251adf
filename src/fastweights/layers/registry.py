"""Name -> layer class registry and a uniform builder."""

from __future__ import annotations

import inspect
from typing import Any

from .attention import SoftmaxAttention
from .base import SequenceLayer
from .delta_delta_net import DeltaDeltaNet
from .delta_lstm import DeltaLSTM
from .delta_mlp import DeltaMLP
from .delta_net import DeltaNet
from .delta_rnn import DeltaRNN
from .feedforward import FeedForward
from .linear_transformer import LinearTransformer
from .lstm import LSTM
from .rdn import RecurrentDeltaNet

LAYERS: dict[str, type[SequenceLayer]] = {
    "linear_transformer": LinearTransformer,
    "delta_net": DeltaNet,
    "delta_mlp": DeltaMLP,
    "delta_delta_net": DeltaDeltaNet,
    "delta_rnn": DeltaRNN,
    "delta_lstm": DeltaLSTM,
    "rdn": RecurrentDeltaNet,
    "transformer": SoftmaxAttention,
    "lstm": LSTM,
    "feedforward": FeedForward,
}


def available_layers() -> list[str]:
    """The registered layer names."""
    return list(LAYERS)


def layer_options(name: str) -> list[str]:
    """The keyword options the layer ``name`` accepts (besides d_model, num_heads, head_dim)."""
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _lookup(name: object) -> type[SequenceLayer]:
    if not isinstance(name, str) or name not in LAYERS:
        raise ValueError(f"name: unknown layer {name!r}; expected one of {available_layers()}")
    return LAYERS[name]


def build_layer(name: str, d_model: int, num_heads: int, head_dim: int | None = None,
                **options: Any) -> SequenceLayer:
    """Build the layer registered as ``name`` (see :data:`LAYERS`) with its keyword ``options``.

    Raises ``ValueError`` for an unknown name and ``TypeError`` naming any option the layer does not take.
    """
    cls = _lookup(name)
    allowed = layer_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"options: layer {name!r} got unexpected option(s) {unknown}; it accepts {allowed}")
    return cls(d_model, num_heads, head_dim, **options)
