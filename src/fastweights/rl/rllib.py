"""RLlib adapter: the :class:`~fastweights.rl.agent.Agent` as an RLlib (new API stack) ``TorchRLModule`` with the
``ValueFunctionAPI``, usable by IMPALA, APPO and PPO.

    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from fastweights.rl.rllib import FastWeightRLModule

    spec = RLModuleSpec(module_class=FastWeightRLModule,
                        model_config={"core": "delta_net", "d_model": 64, "max_seq_len": 20})

``model_config`` holds :class:`~fastweights.rl.agent.AgentConfig` fields (``core`` required; ``obs_shape`` and
``num_actions`` come from the spaces); every other key (RLlib's own defaults, ``max_seq_len``: the length of the
chunks RLlib cuts episodes into) is left to RLlib.

How the state travels: RLlib cuts every episode into ``max_seq_len`` chunks and hands the module the state at
the start of each chunk (``Columns.STATE_IN``, a flat dict of batch-first tensors) -- zeros at episode starts --
so no ``done`` masking happens inside the module (every chunk lies inside one episode). The agent's nested state
(one fast-weight state per layer, or the LSTM's ``(h, c)``) is flattened to ``{"s0": ..., "s1": ...}`` with the
batch axis first, and rebuilt on the way in. The previous-reward input of the paper's agent is fed zeros (RLlib
does not provide it without extra connectors).

Needs ``ray[rllib]`` (which pins its own gymnasium version: install it in a separate environment). The state
helpers (:func:`flatten_state`, :func:`unflatten_state`) and :class:`MemoryTaskEnv` work without ray.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from .agent import Agent, AgentConfig
from .envs import MEMORY_TASKS


def _leaves(state: Any) -> list[Tensor]:
    if isinstance(state, Tensor):
        return [state]
    return [leaf for s in state for leaf in _leaves(s)]


def _rebuild(template: Any, leaves: list[Tensor]) -> Any:
    if isinstance(template, Tensor):
        return leaves.pop(0)
    parts = [_rebuild(t, leaves) for t in template]
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        return type(template)(*parts)
    return type(template)(parts)


def batch_axes(agent: Agent) -> list[int]:
    """The batch axis of every leaf of the agent's state (0 for the fast-weight states, 1 for the LSTM's)."""
    one, two = _leaves(agent.initial_state(1)), _leaves(agent.initial_state(2))
    return [next(i for i, (a, b) in enumerate(zip(x.shape, y.shape)) if a != b) for x, y in zip(one, two)]


def flatten_state(agent: Agent, state: Any) -> dict[str, Tensor]:
    """The agent's nested state as ``{"s0": t0, "s1": t1, ...}``, every tensor with the batch axis first."""
    return {f"s{i}": leaf.movedim(axis, 0) for i, (leaf, axis) in enumerate(zip(_leaves(state), batch_axes(agent)))}


def unflatten_state(agent: Agent, flat: dict[str, Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    axes = batch_axes(agent)
    if sorted(flat) != sorted(f"s{i}" for i in range(len(axes))):
        raise ValueError(f"state: expected keys {[f's{i}' for i in range(len(axes))]}, got {sorted(flat)}")
    leaves = [flat[f"s{i}"].movedim(0, axis) for i, axis in enumerate(axes)]
    if axes and any(a != 0 for a in axes):
        leaves = [t.contiguous() for t in leaves]
    return _rebuild(agent.initial_state(1), leaves)


def agent_from_spaces(observation_space: Any, action_space: Any, model_config: dict[str, Any]) -> Agent:
    """An :class:`Agent` for gymnasium spaces (``Box`` observations, ``Discrete`` actions)."""
    if not hasattr(action_space, "n"):
        raise ValueError(f"action_space: expected a Discrete space, got {action_space}")
    names = {f.name for f in dataclasses.fields(AgentConfig)} - {"obs_shape", "num_actions"}
    # RLlib merges its own defaults (fcnet_hiddens, vf_share_layers, max_seq_len, ...) into model_config
    fields = {k: v for k, v in dict(model_config or {}).items() if k in names}
    if "core" not in fields:
        raise ValueError("model_config: expected a 'core' (e.g. 'delta_net', 'lstm', 'rdn')")
    if fields.get("prev_action"):
        raise ValueError("model_config: prev_action is not supported by the RLlib adapter")
    return Agent(AgentConfig(obs_shape=tuple(observation_space.shape), num_actions=int(action_space.n), **fields))


try:  # the gymnasium wrapper of the memory tasks needs gymnasium (ray[rllib] brings it)
    import gymnasium as _gym

    class MemoryTaskEnv(_gym.Env):
        """One copy of a NumPy memory task (``repeat_first``, ``repeat_previous``, ``count_recall``) as a
        ``gymnasium.Env`` for RLlib's env runners. ``config``: ``{"task": name, **task options}``."""

        metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

        def __init__(self, config: dict[str, Any] | None = None) -> None:
            config = dict(config or {})
            task = config.pop("task", "repeat_first")
            if task not in MEMORY_TASKS:
                raise ValueError(f"task: expected one of {sorted(MEMORY_TASKS)}, got {task!r}")
            self.task = MEMORY_TASKS[task](1, **config)
            self.observation_space = _gym.spaces.Box(0.0, 1.0, self.task.obs_shape, np.float32)
            self.action_space = _gym.spaces.Discrete(self.task.num_actions)

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            return self.task.reset(seed=int(self.np_random.integers(2**31)))[0], {}

        def step(self, action):
            res = self.task.step(np.array([int(action)]))
            # on done the task has already started its next episode; the caller's reset() draws a fresh one
            return res.obs[0], float(res.reward[0]), bool(res.done[0]), False, {}

except ImportError:  # pragma: no cover - depends on the environment
    pass


try:  # the adapter class itself needs ray[rllib]
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS, TargetNetworkAPI
    from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule

    HAVE_RLLIB = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_RLLIB = False


if HAVE_RLLIB:

    class FastWeightRLModule(TorchRLModule, ValueFunctionAPI, TargetNetworkAPI):
        """The fast-weight agent as an RLlib ``TorchRLModule`` (see the module docstring); the target-network API
        (a copy of the whole agent) is what APPO needs."""

        def setup(self) -> None:
            self.agent = agent_from_spaces(self.observation_space, self.action_space, self.model_config)

        def get_initial_state(self) -> dict[str, np.ndarray]:
            """Zero state of one stream (no batch axis), as RLlib expects."""
            flat = flatten_state(self.agent, self.agent.initial_state(1, "cpu"))
            return {k: v[0].numpy() for k, v in flat.items()}

        def _run(self, batch: dict[str, Any], agent: Agent | None = None
                 ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
            agent = self.agent if agent is None else agent
            obs = batch[Columns.OBS]
            B, T = obs.shape[:2]
            state = unflatten_state(agent, batch[Columns.STATE_IN])
            done = torch.zeros(B, T, dtype=torch.bool, device=obs.device)
            out = agent(obs, done, None, None, state)
            return out.logits, out.baseline, flatten_state(agent, out.state)

        def make_target_networks(self) -> None:
            from ray.rllib.core.learner.utils import make_target_network

            self._target_agent = make_target_network(self.agent)

        def get_target_network_pairs(self) -> list[tuple[Any, Any]]:
            return [(self.agent, self._target_agent)]

        def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
            logits, _, _ = self._run(batch, self._target_agent)
            return {TARGET_NETWORK_ACTION_DIST_INPUTS: logits}

        def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            logits, _, state_out = self._run(batch)
            return {Columns.ACTION_DIST_INPUTS: logits, Columns.STATE_OUT: state_out}

        def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            logits, values, state_out = self._run(batch)
            # the values travel as the "embeddings" that compute_values receives back
            return {Columns.ACTION_DIST_INPUTS: logits, Columns.STATE_OUT: state_out, Columns.EMBEDDINGS: values}

        def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Tensor:
            if embeddings is None:
                _, embeddings, _ = self._run(batch)
            return embeddings
