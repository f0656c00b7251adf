"""MinAtar: 10x10 miniatures of five Atari games (Young & Tian, 2019) for reinforcement learning at small compute.

Each game is a NumPy simulation whose state is a stack of binary 10x10 channels (the ball, the paddle, a trail that
shows where the ball came from, ...). :class:`MinAtarEnv` runs ``num_envs`` copies of one game (``minatar``
package, ``pip install 'fastweights[minatar]'``) behind the :class:`~fastweights.rl.envs.BatchedEnv` interface:

* observation ``uint8 [C, 10, 10]`` (0/1, channels first as the conv torsos expect; C = 4 for Breakout, 6 for
  Space Invaders, 4 for Asterix, 7 for Freeway, 10 for Seaquest);
* the game's minimal action set (Breakout 3 actions, Space Invaders 4, Asterix 5, Freeway 3, Seaquest 6);
* MinAtar's own protocol: sticky actions with probability 0.1 and difficulty ramping on (both options);
* an episode ends when the game does; ``max_episode_steps`` (10 000 by default) also ends one, because a good agent
  can play Breakout forever (bricks come back once cleared).

Names: ``"minatar:breakout"``, ``"minatar:space_invaders"``, ``"minatar:asterix"``, ``"minatar:freeway"``,
``"minatar:seaquest"`` (also CamelCase, ``"minatar:SpaceInvaders"``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .envs.base import BatchedEnv, EpisodeStats, StepResult, _positive

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def game_name(name: str) -> str:
    """``"minatar:SpaceInvaders"``, ``"MinAtar/SpaceInvaders-v1"`` or ``"space_invaders"`` -> ``"space_invaders"``."""
    base = name.removeprefix("minatar:").split("/")[-1].split("-")[0]
    snake = "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(base))
    if snake not in GAMES:
        raise ValueError(f"env: unknown MinAtar game {name!r}; expected one of "
                         f"{['minatar:' + g for g in GAMES]}")
    return snake


class MinAtarEnv(BatchedEnv):
    """``num_envs`` independent copies of one MinAtar game, stepped in turn (each step costs tens of microseconds,
    far below the agent's forward pass, so there is nothing to gain from threads).

    Args:
        game: a MinAtar game name (see the module docstring).
        num_envs: number of copies.
        sticky_action_prob: probability that a copy repeats its previous action instead of the chosen one
            (MinAtar's default 0.1).
        difficulty_ramping: whether the games speed up as they go on (MinAtar's default True).
        max_episode_steps: an episode also ends after this many agent steps.

    ``reset(seed)`` seeds copy ``i`` with ``seed + i``: runs with the same seed see the same games.
    """

    def __init__(self, game: str, num_envs: int, *, sticky_action_prob: float = 0.1,
                 difficulty_ramping: bool = True, max_episode_steps: int = 10_000) -> None:
        self.game = game_name(game)
        self.num_envs = _positive("num_envs", num_envs)
        self.max_episode_steps = _positive("max_episode_steps", max_episode_steps)
        if not isinstance(sticky_action_prob, (int, float)) or not 0.0 <= sticky_action_prob <= 1.0:
            raise ValueError(f"sticky_action_prob: expected a number in [0, 1], got {sticky_action_prob!r}")
        if not isinstance(difficulty_ramping, bool):
            raise ValueError(f"difficulty_ramping: expected a bool, got {difficulty_ramping!r}")
        try:
            from minatar import Environment
        except ImportError:
            raise ImportError("MinAtar environments need the minatar package: pip install 'fastweights[minatar]'"
                              ) from None
        self.envs = [Environment(self.game, sticky_action_prob=float(sticky_action_prob),
                                 difficulty_ramping=difficulty_ramping) for _ in range(self.num_envs)]
        self.action_set = [int(a) for a in self.envs[0].minimal_action_set()]
        self.num_actions = len(self.action_set)
        h, w, c = self.envs[0].state_shape()
        self.obs_shape = (int(c), int(h), int(w))
        self.obs_dtype = np.dtype(np.uint8)
        self.stats = EpisodeStats(self.num_envs)

    def _obs(self) -> np.ndarray:
        # [N, H, W, C] bool -> [N, C, H, W] uint8
        return np.stack([e.state() for e in self.envs]).transpose(0, 3, 1, 2).astype(np.uint8)

    def reset(self, seed: int | None = None) -> np.ndarray:
        # MinAtar draws only from its own RandomState, which is unseeded until seed() is called
        base = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else int(seed)
        for i, env in enumerate(self.envs):
            env.seed(base + i)
            env.reset()
        self.stats = EpisodeStats(self.num_envs)
        return self._obs()

    def step(self, actions: np.ndarray) -> StepResult:
        a = self._check_actions(actions)
        reward = np.zeros(self.num_envs, dtype=np.float32)
        done = np.zeros(self.num_envs, dtype=bool)
        for i, env in enumerate(self.envs):
            r, terminal = env.act(self.action_set[a[i]])
            reward[i] = r
            done[i] = terminal
        # the step counter of EpisodeStats counts this step too: lengths + 1 is the episode's length after it
        done |= self.stats.lengths + 1 >= self.max_episode_steps
        info = self.stats.update(reward, done)
        for i in np.flatnonzero(done):
            self.envs[i].reset()
        return StepResult(self._obs(), reward, done, info)

    def get_state(self) -> dict[str, Any]:
        """Plain containers, arrays and numbers only (checkpoints load with ``torch.load(weights_only=True)``)."""
        games = [{"game": _plain({k: v for k, v in vars(e.env).items() if k != "random"}),
                  "rng": _plain(e.random.get_state()), "last_action": int(e.last_action)} for e in self.envs]
        return {"games": games, "stats": copy.deepcopy(self.stats)}

    def set_state(self, state: dict[str, Any]) -> None:
        if len(state["games"]) != self.num_envs:
            raise ValueError(f"state: a snapshot of {len(state['games'])} MinAtar copies cannot restore "
                             f"{self.num_envs}")
        for env, saved in zip(self.envs, state["games"]):
            vars(env.env).update(copy.deepcopy(saved["game"]))
            env.random.set_state(tuple(saved["rng"]))
            env.env.random = env.random
            env.last_action = saved["last_action"]
        self.stats = copy.deepcopy(state["stats"])


def _plain(value: Any) -> Any:
    """NumPy scalars -> Python numbers, recursively (arrays stay arrays): a NumPy scalar is not among the types a
    safe checkpoint load rebuilds, and its value is all the games use."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return copy.deepcopy(value)
