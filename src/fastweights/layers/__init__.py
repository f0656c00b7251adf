"""Sequence layers ``[B, T, C] -> [B, T, C]`` with a carried recurrent state: the paper's fast weight
programmers and the baselines. See :mod:`fastweights.layers.base` for the shared API."""

from .attention import KVCache, SoftmaxAttention
from .base import FEATURE_MAP_NAMES, FastWeightLayer, FeatureMap, SequenceLayer, check_input, detach_state
from .delta_delta_net import DeltaDeltaNet
from .delta_lstm import DeltaLSTM
from .delta_mlp import DeltaMLP
from .delta_net import DeltaNet
from .delta_rnn import DeltaRNN
from .feedforward import FeedForward
from .linear_transformer import LinearTransformer
from .lstm import LSTM, LSTMState, run_lstm
from .rdn import RecurrentDeltaNet
from .registry import (
    LAYERS,
    MODEL_KINDS,
    available_layers,
    build_layer,
    check_layer,
    layer_options,
    register_layer,
    task_options,
)

__all__ = [
    "FEATURE_MAP_NAMES", "LAYERS", "LSTM", "MODEL_KINDS", "DeltaDeltaNet", "DeltaLSTM", "DeltaMLP", "DeltaNet",
    "DeltaRNN", "FastWeightLayer", "FeatureMap", "FeedForward", "KVCache", "LSTMState", "LinearTransformer",
    "RecurrentDeltaNet", "SequenceLayer", "SoftmaxAttention", "available_layers", "build_layer", "check_input",
    "check_layer", "detach_state", "layer_options", "register_layer", "run_lstm", "task_options",
]
