"""Name -> layer class registry, a uniform builder and the layers' task presets (:func:`task_options`).

Every name is a layer that the models place in residual blocks. Two baselines of the paper are built without
blocks under the same names: the algorithmic ``lstm`` model (:class:`fastweights.models.LSTMModel`) and the RL
agent's ``lstm`` and ``feedforward`` cores (:mod:`fastweights.rl.agent`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
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


#: The tasks a layer's ``TASK_OPTIONS`` can hold presets for: the algorithmic sequence models
#: (:class:`fastweights.models.SequenceModel`), the language model and the RL agent's core.
TASKS = ("algorithmic", "lm", "rl")


def available_layers() -> list[str]:
    """The registered layer names."""
    return list(LAYERS)


def layer_options(name: str) -> list[str]:
    """The keyword options the layer ``name`` accepts (besides d_model, num_heads, head_dim)."""
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def task_options(name: str, task: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keyword options a ``task`` model passes to ``build_layer(name, ...)``: the layer's preset for the task
    (its ``TASK_OPTIONS[task]``, then ``TASK_OPTIONS[f"{task} v{version}"]`` for a layer with a ``version``
    option) overridden by ``options`` (the user's)."""
    cls = _lookup(name)
    if task not in TASKS:
        raise ValueError(f"task: expected one of {list(TASKS)}, got {task!r}")
    options = dict(options or {})
    preset = dict(cls.TASK_OPTIONS.get(task, {}))
    params = inspect.signature(cls.__init__).parameters
    if "version" in params:
        version = options.get("version", params["version"].default)
        preset.update(cls.TASK_OPTIONS.get(f"{task} v{version}", {}))
    return {**preset, **options}


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
