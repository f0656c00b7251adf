"""What an agent needs of its environment: :class:`EnvSpec` (a run's and an export's ``env.json``), the agent's
configuration for it, and a run's environments and agent (:func:`build`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .agent import Agent, AgentConfig
from .config import RLConfig
from .envs import BatchedEnv, make_env

#: The file of a run (and of an export) that holds its environment spec (:class:`EnvSpec`).
ENV_FILE = "env.json"
ENV_FORMAT = "fastweights-env"
#: The observation dtypes of the environments (float32 features, uint8 frames).
OBS_DTYPES = ("float32", "uint8")


@dataclass
class EnvSpec:
    """What an agent needs to know of its environment (``env.json`` of an RL run): the environment's name and
    options (:func:`~fastweights.rl.envs.make_env`), the observation shape and dtype, and the number of actions."""

    env: str
    env_options: dict[str, Any]
    obs_shape: tuple[int, ...]
    obs_dtype: str  # a name of OBS_DTYPES
    num_actions: int

    @classmethod
    def of(cls, cfg: RLConfig, env: BatchedEnv) -> EnvSpec:
        return cls(cfg.env, dict(cfg.env_options), tuple(env.obs_shape), np.dtype(env.obs_dtype).name,
                   env.num_actions)

    def make_env(self, num_envs: int = 1) -> BatchedEnv:
        """``num_envs`` copies of the environment (Atari needs the ``rl`` extra)."""
        return make_env(self.env, num_envs, self.env_options)

    def to_dict(self) -> dict[str, Any]:
        return {"format": ENV_FORMAT, "version": 1, "env": self.env, "env_options": self.env_options,
                "obs_shape": list(self.obs_shape), "obs_dtype": self.obs_dtype, "num_actions": self.num_actions}

    @classmethod
    def from_dict(cls, data: Any, source: str = "environment spec") -> EnvSpec:
        if not isinstance(data, dict) or data.get("format") != ENV_FORMAT:
            raise ValueError(f"{source}: not a fastweights environment spec (expected a JSON object with "
                             f"format={ENV_FORMAT!r})")
        if data.get("version") != 1:
            raise ValueError(f"{source}: unsupported environment spec version {data.get('version')!r} (expected 1)")
        shape, n = data.get("obs_shape"), data.get("num_actions")
        if not isinstance(data.get("env"), str) or not isinstance(data.get("env_options"), dict):
            raise ValueError(f"{source}: expected env (a string) and env_options (an object)")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                  for d in shape):
            raise ValueError(f"{source}: obs_shape: expected a list of positive integers, got {shape!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{source}: num_actions: expected a positive integer, got {n!r}")
        if data.get("obs_dtype") not in OBS_DTYPES:
            raise ValueError(f"{source}: obs_dtype: expected one of {list(OBS_DTYPES)}, got {data.get('obs_dtype')!r}")
        return cls(data["env"], data["env_options"], tuple(shape), data["obs_dtype"], n)


def agent_config(cfg: RLConfig, env: BatchedEnv | EnvSpec) -> AgentConfig:
    """The :class:`AgentConfig` of a run: ``cfg``'s agent for the observation and action spaces of ``env``."""
    return AgentConfig(obs_shape=tuple(env.obs_shape), num_actions=env.num_actions, **cfg.agent_fields())


def build(cfg: RLConfig, num_envs: int | None = None) -> tuple[BatchedEnv, Agent]:
    """The environment (``num_envs`` copies, default ``cfg.num_envs``) and a freshly initialised agent (seeded)."""
    env = make_env(cfg.env, cfg.num_envs if num_envs is None else num_envs, cfg.env_options)
    torch.manual_seed(cfg.seed)
    return env, Agent(agent_config(cfg, env))
