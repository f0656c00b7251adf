"""Name -> layer class registry, a uniform builder and the layers' task presets (:func:`task_options`).

Every name is a layer that the models place in residual blocks. Two baselines of the paper are built without
blocks under the same names: the algorithmic ``lstm`` model (:class:`fastweights.models.LSTMModel`) and the RL
agent's ``lstm`` and ``feedforward`` cores (:mod:`fastweights.rl.agent`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..plugins import import_object, load_plugins
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


#: The kinds of model a layer's ``TASK_OPTIONS`` can hold presets for: the algorithmic sequence models
#: (:class:`fastweights.models.SequenceModel`), the language model and the RL agent's core.
MODEL_KINDS = ("algorithmic", "lm", "rl")


def available_layers() -> list[str]:
    """The registered layer names (plugins included; layers named by import path are not listed)."""
    load_plugins()
    return list(LAYERS)


def register_layer(name: str, cls: type[SequenceLayer], *, replace: bool = False) -> type[SequenceLayer]:
    """Make the layer class ``cls`` buildable as ``name`` in every model and task (``--model name``); a taken name is
    refused unless ``replace``. Returns ``cls`` (usable as ``register_layer("name", Cls)`` after the class)."""
    if not isinstance(cls, type) or not issubclass(cls, SequenceLayer):
        raise TypeError(f"cls: expected a subclass of fastweights.layers.SequenceLayer, got {cls!r}")
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name: expected a layer name without ':', got {name!r}")
    if name in LAYERS and LAYERS[name] is not cls and not replace:
        raise ValueError(f"name: layer {name!r} is already registered ({LAYERS[name].__qualname__}); pass "
                         f"replace=True to replace it")
    LAYERS[name] = cls
    return cls


def check_layer(name: object, argument: str = "model") -> None:
    """Refuse a name that is no layer: neither registered nor the import path of a trusted module's layer
    (``module:Class``, see :mod:`fastweights.plugins`)."""
    _lookup(name, argument)


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
    if task not in MODEL_KINDS:
        raise ValueError(f"task: expected one of {list(MODEL_KINDS)}, got {task!r}")
    options = dict(options or {})
    preset = dict(cls.TASK_OPTIONS.get(task, {}))
    params = inspect.signature(cls.__init__).parameters
    if "version" in params:
        version = options.get("version", params["version"].default)
        preset.update(cls.TASK_OPTIONS.get(f"{task} v{version}", {}))
    return {**preset, **options}


def _lookup(name: object, argument: str = "name") -> type[SequenceLayer]:
    if isinstance(name, str) and ":" in name:  # a user's layer, named by import path
        cls = import_object(name, argument)
        if not isinstance(cls, type) or not issubclass(cls, SequenceLayer):
            raise ValueError(f"{argument}: {name!r} is not a subclass of fastweights.layers.SequenceLayer")
        return cls
    if not isinstance(name, str) or name not in available_layers():
        what = "layer" if argument == "name" else argument  # model: unknown model 'x'
        raise ValueError(f"{argument}: unknown {what} {name!r}; expected one of {available_layers()} or the "
                         f"module:Class path of a layer of your own")
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
