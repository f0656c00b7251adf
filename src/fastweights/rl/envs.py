"""Batched environments with one convention: ``done[i]`` = the observation just returned for environment ``i`` is
the first one of a new episode (the previous episode ended with the action just taken).

Every environment here is a :class:`BatchedEnv` of ``num_envs`` copies that reset themselves:

* ``reset(seed) -> obs [N, *obs_shape]`` starts every copy;
* ``step(actions [N]) -> StepResult(obs, reward [N], done [N], info)``: ``reward`` is the reward of the action
  just taken, ``done`` marks the copies whose episode ended with it (their ``obs`` already starts the next
  episode: gymnasium's ``AutoresetMode.SAME_STEP``), and ``info["episode_returns"]`` /
  ``info["episode_lengths"]`` list the undiscounted returns and lengths of the episodes that ended.

Environments:

* memory tasks in NumPy (no dependency, vectorised, CPU-fast; each needs memory to be solved):
  :class:`RepeatFirst`, :class:`RepeatPrevious`, :class:`CountRecall`;
* Atari through ``ale-py`` (:class:`AtariEnv`) with the paper's preprocessing (paper.md C.4);
* MinAtar's 10x10 miniature games (:class:`fastweights.rl.minatar.MinAtarEnv`);
* any registered gymnasium id with a discrete action space (:class:`GymnasiumEnv`), e.g. popgym's tasks.

:func:`make_env` builds one from a name (see its docstring).
"""

from __future__ import annotations

import copy
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


# ---------------------------------------------------------------------------------------------------------------
# Atari (ale-py)
# ---------------------------------------------------------------------------------------------------------------


def _game_name(name: str) -> str:
    """``"BreakoutNoFrameskip-v4"``, ``"ALE/Breakout-v5"`` or ``"Breakout"`` -> ale-py's ROM id ``"breakout"``."""
    base = name.split("/")[-1].split("-")[0]
    base = base.removesuffix("NoFrameskip").removesuffix("Deterministic")
    out = []
    for i, ch in enumerate(base):  # CamelCase -> snake_case (MsPacman -> ms_pacman)
        after_lower = i and (base[i - 1].islower() or base[i - 1].isdigit())
        acronym_end = i and base[i - 1].isupper() and i + 1 < len(base) and base[i + 1].islower()  # UpNDown
        if ch.isupper() and (after_lower or acronym_end):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


class AtariEnv(BatchedEnv):
    """Atari 2600 games as in the paper (paper.md C.4: torchbeast's wrappers on ``<Game>NoFrameskip-v4``), through
    ``ale_py.vector_env.AtariVectorEnv`` (threaded C++ preprocessing, no OpenCV needed):

    * sticky actions off, minimal action set (as ``NoFrameskip-v4``);
    * no-op reset: 1..``noop_max`` (30) random no-ops at each game start;
    * max-and-skip: each action repeated ``frameskip`` (4) frames, observation = max over the last two;
    * FIRE at game start for games that have it;
    * 84x84 grey frames, stack of ``frame_stack`` (4), observation uint8 ``[4, 84, 84]`` (oldest frame first);
    * episodic life (``episodic_life=True``): a lost life ends the episode (``done``) but the game goes on; the
      game itself restarts only at game over. ``info["game_returns"]`` lists the returns of whole games.
    * rewards are NOT clipped here (the learner clips them, paper.md E.3); returns are raw game scores.

    * FIRE after a lost life (``fire_after_life_loss=True``, games whose second action is FIRE): torchbeast's
      wrappers press FIRE when an episode restarts after a lost life; here the first action of that new episode is
      replaced by FIRE. The executed actions are reported in ``info["actions"]`` (the learner trains on them).

    Differences from torchbeast's wrappers: torchbeast also takes one no-op before that FIRE and hands over the
    observation after it (here the agent sees the frame right after the lost life); a game is cut after
    ``max_episode_frames`` frames (ale-py's 108 000 = 30 minutes) instead of gym's 400 000.
    """

    def __init__(self, game: str, num_envs: int, *, noop_max: int = 30, frameskip: int = 4, frame_stack: int = 4,
                 episodic_life: bool = True, max_episode_frames: int = 108_000, num_threads: int = 0,
                 fire_after_life_loss: bool = True) -> None:
        try:
            import gymnasium
            from ale_py.vector_env import AtariVectorEnv
        except ImportError:
            raise ImportError("Atari needs gymnasium and ale-py: pip install 'fastweights[rl]'") from None
        self.num_envs = _positive("num_envs", num_envs)
        self.game = _game_name(game)
        self.episodic_life = bool(episodic_life)
        self.options = {"noop_max": noop_max, "frameskip": frameskip, "frame_stack": frame_stack,
                        "episodic_life": episodic_life, "max_episode_frames": max_episode_frames}
        try:
            self.env = AtariVectorEnv(
                self.game, self.num_envs, num_threads=num_threads, repeat_action_probability=0.0,
                full_action_space=False, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP, img_height=84,
                img_width=84, grayscale=True, stack_num=frame_stack, frameskip=frameskip, maxpool=True,
                noop_max=noop_max, episodic_life=False, life_loss_info=self.episodic_life, reward_clipping=False,
                use_fire_reset=True, max_num_frames_per_episode=max_episode_frames)
        except Exception as e:  # ale-py raises a bare RuntimeError/ValueError for unknown ROMs
            raise ValueError(f"env: cannot make Atari game {game!r} (ale-py ROM id {self.game!r}): {e}") from None
        self.obs_shape = tuple(self.env.single_observation_space.shape)
        self.obs_dtype = np.dtype(np.uint8)
        self.num_actions = int(self.env.single_action_space.n)
        self.stats = EpisodeStats(self.num_envs)
        self.game_stats = EpisodeStats(self.num_envs)
        self.frame_number = np.zeros(self.num_envs, dtype=np.int64)
        names = [a.name for a in self.env.ale.get_action_set()]
        has_fire = len(names) >= 3 and names[1] == "FIRE"  # torchbeast's FireResetEnv condition
        self.fire_action = 1 if has_fire and fire_after_life_loss and self.episodic_life else None
        self.fire_next = np.zeros(self.num_envs, dtype=bool)

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, info = self.env.reset(seed=seed)
        self.stats = EpisodeStats(self.num_envs)
        self.game_stats = EpisodeStats(self.num_envs)
        self.frame_number = np.asarray(info["episode_frame_number"], dtype=np.int64)
        self.fire_next[:] = False
        return obs

    def step(self, actions: np.ndarray) -> StepResult:
        a = self._check_actions(actions).copy()
        if self.fire_action is not None:
            a[self.fire_next] = self.fire_action
        obs, reward, terminated, truncated, info = self.env.step(a)
        reward = np.asarray(reward, dtype=np.float32)
        done = np.asarray(terminated | truncated, dtype=bool)
        frame = np.asarray(info["episode_frame_number"], dtype=np.int64)
        # A new game (not just a lost life) restarts the episode frame counter.
        game_over = done & (frame < self.frame_number) if self.episodic_life else done
        self.frame_number = frame
        self.fire_next = done & ~game_over
        out = self.stats.update(reward, done)
        games = self.game_stats.update(reward, game_over)
        out.update({"game_returns": games["episode_returns"], "lives": np.asarray(info["lives"]), "actions": a})
        return StepResult(obs, reward, done, out)

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------------------------------
# gymnasium (popgym and anything else with a discrete action space)
# ---------------------------------------------------------------------------------------------------------------


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


def is_atari(name: str) -> bool:
    """Whether ``make_env`` treats ``name`` as an Atari game."""
    return name.startswith(("atari:", "ALE/")) or "NoFrameskip" in name


def make_env(name: str, num_envs: int, options: dict[str, Any] | None = None) -> BatchedEnv:
    """Build a :class:`BatchedEnv` from a name:

    * ``"repeat_first"``, ``"repeat_previous"``, ``"count_recall"``: the NumPy memory tasks (options:
      ``num_symbols``, ``length``, and ``delay`` for repeat_previous);
    * ``"BreakoutNoFrameskip-v4"``, ``"atari:Breakout"`` or ``"ALE/Breakout-v5"``: :class:`AtariEnv` (the
      paper's preprocessing whichever id is given; options: ``noop_max``, ``frameskip``, ``frame_stack``,
      ``episodic_life``, ``max_episode_frames``, ``num_threads``);
    * ``"minatar:<game>"`` (``breakout``, ``space_invaders``, ``asterix``, ``freeway``, ``seaquest``):
      :class:`~fastweights.rl.minatar.MinAtarEnv` (options: ``sticky_action_prob``, ``difficulty_ramping``,
      ``max_episode_steps``);
    * ``"gym:<id>"`` (e.g. ``"gym:popgym-RepeatFirstEasy-v0"``): :class:`GymnasiumEnv`, options passed to
      ``gymnasium.make``.
    """
    options = dict(options or {})
    if not isinstance(name, str) or not name:
        raise ValueError(f"env: expected an environment name, got {name!r}")
    try:
        if name in MEMORY_TASKS:
            return MEMORY_TASKS[name](num_envs, **options)
        if is_atari(name):
            return AtariEnv(name.removeprefix("atari:"), num_envs, **options)
        if name.startswith("gym:"):
            return GymnasiumEnv(name[4:], num_envs, **options)
        if name.startswith("minatar:"):
            from .minatar import MinAtarEnv  # imports this module

            return MinAtarEnv(name, num_envs, **options)
    except TypeError as e:  # unknown option
        raise ValueError(f"env_options: {e}") from None
    raise ValueError(f"env: unknown environment {name!r}; expected one of {sorted(MEMORY_TASKS)}, an Atari id "
                     f"like 'BreakoutNoFrameskip-v4' or 'atari:Breakout', 'minatar:<game>' or 'gym:<gymnasium id>'")
