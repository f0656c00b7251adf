"""Memory tasks in NumPy (no dependency, vectorised, CPU-fast; each needs memory to be solved): :class:`RepeatFirst`,
:class:`RepeatPrevious`, :class:`CountRecall`."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .base import BatchedEnv, EpisodeStats, StepResult, _positive


class _SymbolTask(BatchedEnv):
    """Shared machinery of the memory tasks: every step shows one of ``num_symbols`` symbols (one-hot) plus a flag
    that is 1 on the first step of an episode; the action is a symbol; episodes last ``length`` steps."""

    def __init__(self, num_envs: int, num_symbols: int = 4, length: int = 10) -> None:
        self.num_envs = _positive("num_envs", num_envs)
        self.num_symbols = _positive("num_symbols", num_symbols)
        if self.num_symbols < 2:
            raise ValueError(f"num_symbols: expected at least 2, got {num_symbols}")
        self.length = _positive("length", length)
        self.num_actions = self.num_symbols
        self.obs_shape = (self.num_symbols + 1,)
        self.obs_dtype = np.dtype(np.float32)
        self.rng = np.random.default_rng()
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self.stats = EpisodeStats(self.num_envs)

    # subclasses: _start(rows) draws the hidden part of new episodes; _reward(actions) rewards the action at self.t
    def _start(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _reward(self, actions: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _symbols(self) -> np.ndarray:
        """The symbol shown at the current step ``self.t`` of every copy."""
        raise NotImplementedError

    def _obs(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, self.num_symbols + 1), dtype=np.float32)
        obs[np.arange(self.num_envs), self._symbols()] = 1.0
        obs[:, -1] = self.t == 0
        return obs

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.rng = np.random.default_rng(seed)
        self.t[:] = 0
        self.stats = EpisodeStats(self.num_envs)
        self._start(np.arange(self.num_envs))
        return self._obs()

    def step(self, actions: np.ndarray) -> StepResult:
        a = self._check_actions(actions)
        reward = self._reward(a).astype(np.float32)
        self.t += 1
        done = self.t >= self.length
        info = self.stats.update(reward, done)
        if done.any():
            self.t[done] = 0
            self._start(np.flatnonzero(done))
        return StepResult(self._obs(), reward, done, info)

    def get_state(self) -> dict[str, Any]:
        return copy.deepcopy({k: v for k, v in vars(self).items()})

    def set_state(self, state: dict[str, Any]) -> None:
        vars(self).update(copy.deepcopy(state))


class RepeatFirst(_SymbolTask):
    """Output the symbol shown at the first step, at every step (after popgym's RepeatFirst).

    Step 0 shows the target symbol (flag 1); steps 1..length-1 show random distractor symbols (flag 0). Every step,
    action == target earns ``1 / length``. Optimal return 1; the best memoryless policy only knows the target at
    step 0: ``(1 + (length - 1) / num_symbols) / length``.
    """

    def __init__(self, num_envs: int, num_symbols: int = 4, length: int = 10) -> None:
        super().__init__(num_envs, num_symbols, length)
        self.target = np.zeros(self.num_envs, dtype=np.int64)
        self.shown = np.zeros(self.num_envs, dtype=np.int64)
        self.optimal_return = 1.0
        self.memoryless_return = (1 + (self.length - 1) / self.num_symbols) / self.length

    def _start(self, rows: np.ndarray) -> None:
        self.target[rows] = self.rng.integers(0, self.num_symbols, rows.size)

    def _symbols(self) -> np.ndarray:
        first = self.t == 0
        self.shown = np.where(first, self.target, self.rng.integers(0, self.num_symbols, self.num_envs))
        return self.shown

    def _reward(self, actions: np.ndarray) -> np.ndarray:
        return (actions == self.target) / self.length


class RepeatPrevious(_SymbolTask):
    """Output the symbol shown ``delay`` steps ago (after popgym's RepeatPrevious).

    Every step shows a random symbol; from step ``delay`` on, action == the symbol of step ``t - delay`` earns
    ``1 / (length - delay)``. Optimal return 1; memoryless: ``1 / num_symbols``.
    """

    def __init__(self, num_envs: int, num_symbols: int = 4, length: int = 10, delay: int = 2) -> None:
        super().__init__(num_envs, num_symbols, length)
        self.delay = _positive("delay", delay)
        if self.delay >= self.length:
            raise ValueError(f"delay: expected less than length = {self.length}, got {delay}")
        self.history = np.zeros((self.num_envs, self.length), dtype=np.int64)
        self.optimal_return = 1.0
        self.memoryless_return = 1.0 / self.num_symbols

    def _start(self, rows: np.ndarray) -> None:
        self.history[rows] = self.rng.integers(0, self.num_symbols, (rows.size, self.length))

    def _symbols(self) -> np.ndarray:
        return self.history[np.arange(self.num_envs), self.t]

    def _reward(self, actions: np.ndarray) -> np.ndarray:
        past = self.t - self.delay
        target = self.history[np.arange(self.num_envs), np.maximum(past, 0)]
        return np.where(past >= 0, (actions == target) / (self.length - self.delay), 0.0)


class CountRecall(_SymbolTask):
    """Report how often the current symbol has been shown so far in the episode (after popgym's CountRecall).

    Every step shows a random symbol; the action is the count of earlier occurrences of that symbol, clipped to
    ``num_symbols - 1`` (so ``num_actions = num_symbols``); a right answer earns ``1 / length``. Optimal return 1.
    """

    def __init__(self, num_envs: int, num_symbols: int = 4, length: int = 10) -> None:
        super().__init__(num_envs, num_symbols, length)
        self.history = np.zeros((self.num_envs, self.length), dtype=np.int64)
        self.optimal_return = 1.0

    def _start(self, rows: np.ndarray) -> None:
        self.history[rows] = self.rng.integers(0, self.num_symbols, (rows.size, self.length))

    def _symbols(self) -> np.ndarray:
        return self.history[np.arange(self.num_envs), self.t]

    def _reward(self, actions: np.ndarray) -> np.ndarray:
        rows = np.arange(self.num_envs)
        current = self.history[rows, self.t]
        earlier = (self.history == current[:, None]) & (np.arange(self.length)[None, :] < self.t[:, None])
        target = np.minimum(earlier.sum(1), self.num_symbols - 1)
        return (actions == target) / self.length


MEMORY_TASKS: dict[str, type[_SymbolTask]] = {
    "repeat_first": RepeatFirst,
    "repeat_previous": RepeatPrevious,
    "count_recall": CountRecall,
}
