"""The interface of every environment: :class:`BatchedEnv` (``num_envs`` copies that reset themselves),
:class:`StepResult` and the per-copy episode statistics (see :mod:`fastweights.rl.envs`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StepResult:
    """What :meth:`BatchedEnv.step` returns; arrays have a leading ``num_envs`` axis."""

    obs: np.ndarray
    reward: np.ndarray  # float32 [N]
    done: np.ndarray  # bool [N]: obs starts a new episode
    info: dict[str, Any] = field(default_factory=dict)


class EpisodeStats:
    """Running undiscounted return and length of every copy; reports the finished episodes."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def update(self, reward: np.ndarray, done: np.ndarray) -> dict[str, np.ndarray]:
        self.returns += reward
        self.lengths += 1
        out = {"episode_returns": self.returns[done].copy(), "episode_lengths": self.lengths[done].copy(),
               "episode_envs": np.flatnonzero(done)}
        self.returns[done] = 0.0
        self.lengths[done] = 0
        return out


class BatchedEnv:
    """Base class: ``num_envs`` self-resetting copies (see the module docstring)."""

    num_envs: int
    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    num_actions: int
    #: mean return of an optimal policy and of the best memoryless one, where known (documentation, tests)
    optimal_return: float | None = None
    memoryless_return: float | None = None

    def reset(self, seed: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> StepResult:
        raise NotImplementedError

    def get_state(self) -> Any:
        """A picklable snapshot that :meth:`set_state` restores exactly (for checkpoints); None if unsupported."""
        return None

    def set_state(self, state: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot restore a snapshot")

    def close(self) -> None:
        pass

    def _check_actions(self, actions: object) -> np.ndarray:
        a = np.asarray(actions)
        if a.shape != (self.num_envs,) or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"actions: expected an integer array of shape [{self.num_envs}], got "
                             f"{a.dtype} {list(a.shape)}")
        if a.size and (a.min() < 0 or a.max() >= self.num_actions):
            raise ValueError(f"actions: expected values in [0, {self.num_actions}), got [{a.min()}, {a.max()}]")
        return a.astype(np.int64)


def _positive(name: str, value: object) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)
