"""Any registered gymnasium id with a discrete action space (:class:`GymnasiumEnv`), e.g. popgym's tasks."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import BatchedEnv, EpisodeStats, StepResult, _positive


class GymnasiumEnv(BatchedEnv):
    """A registered gymnasium id with a ``Discrete`` action space and a ``Box``/``Discrete``/``MultiDiscrete``
    observation, run as a synchronous vector env with ``AutoresetMode.SAME_STEP`` (so ``done`` marks the first
    observation of a new episode). Discrete observations are one-hot encoded; everything is flattened to float32.
    """

    def __init__(self, env_id: str, num_envs: int, **kwargs: Any) -> None:
        try:
            import gymnasium
        except ImportError:
            raise ImportError("gymnasium environments need gymnasium: pip install 'fastweights[rl]'") from None
        if env_id.startswith("popgym"):
            try:
                import popgym  # noqa: F401  (registers the popgym ids)
            except ImportError:
                raise ImportError("popgym environments need popgym: pip install popgym") from None
        self.num_envs = _positive("num_envs", num_envs)
        try:
            self.env = gymnasium.vector.SyncVectorEnv(
                [lambda: gymnasium.make(env_id, **kwargs) for _ in range(self.num_envs)],
                autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
        except gymnasium.error.Error as e:
            raise ValueError(f"env: cannot make gymnasium env {env_id!r}: {e}") from None
        space = self.env.single_action_space
        if not isinstance(space, gymnasium.spaces.Discrete):
            raise ValueError(f"env: {env_id!r} has action space {space}; only Discrete actions are supported")
        self.num_actions = int(space.n)
        self.obs_space = self.env.single_observation_space
        self.obs_shape = (int(gymnasium.spaces.flatdim(self.obs_space)),)
        self.obs_dtype = np.dtype(np.float32)
        self.stats = EpisodeStats(self.num_envs)

    def _flat(self, obs: Any) -> np.ndarray:
        import gymnasium

        space = self.obs_space
        if isinstance(space, gymnasium.spaces.Box):
            return np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
        flat = [gymnasium.spaces.flatten(space, o) for o in gymnasium.vector.utils.iterate(self.env.observation_space,
                                                                                             obs)]
        return np.stack(flat).astype(np.float32)

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self.env.reset(seed=seed)
        self.stats = EpisodeStats(self.num_envs)
        return self._flat(obs)

    def step(self, actions: np.ndarray) -> StepResult:
        a = self._check_actions(actions)
        obs, reward, terminated, truncated, _ = self.env.step(a)
        reward = np.asarray(reward, dtype=np.float32)
        done = np.asarray(terminated | truncated, dtype=bool)
        return StepResult(self._flat(obs), reward, done, self.stats.update(reward, done))

    def close(self) -> None:
        self.env.close()
