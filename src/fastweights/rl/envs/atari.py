"""Atari through ``ale-py`` with the paper's preprocessing (paper.md C.4: torchbeast's wrappers): :class:`AtariGame`
(one game) and :class:`AtariEnv` (a batch of them), frames warped as OpenCV would, in NumPy."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np

from .base import BatchedEnv, EpisodeStats, StepResult, _positive


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


# Frames as torchbeast's WarpFrame makes them (84x84 grey, OpenCV's RGB->grey and INTER_AREA resize), computed in
# NumPy so that Atari needs no OpenCV; the same bits as OpenCV's (checked on Atari frames and random images).
FRAME_SIZE = 84


def _area_weights(src: int, dst: int) -> np.ndarray:
    """``[dst, src]`` weights of OpenCV's INTER_AREA downsampling along one axis: output pixel ``d`` averages the
    input cell ``[d * s, (d + 1) * s)`` (``s = src / dst``), partly covered pixels weighted by the covered part;
    every row sums to 1. ``W_h @ image @ W_w.T`` is then ``cv2.resize(image, (dst_w, dst_h), INTER_AREA)`` before
    rounding (OpenCV's ``computeResizeAreaTab``, for ``dst <= src``)."""
    if not 1 <= dst <= src:
        raise ValueError(f"dst: expected 1 <= dst <= src = {src} (area resampling only shrinks), got {dst}")
    scale = src / dst
    w = np.zeros((dst, src))
    for d in range(dst):
        lo, hi = d * scale, (d + 1) * scale
        cell = min(scale, src - lo)
        last = min(math.floor(hi), src - 1)
        first = min(math.ceil(lo), last)
        if first - lo > 1e-3:
            w[d, first - 1] = (first - lo) / cell
        w[d, first:last] = 1 / cell
        if hi - last > 1e-3:
            w[d, last] = min(hi - last, 1.0, cell) / cell
    return w


@functools.lru_cache(maxsize=8)
def _area_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_area_weights` as taps: ``(index [dst, k], weight [dst, k])`` with ``out[d] = sum_j weight[d, j] *
    in[index[d, j]]`` (k = the most input pixels one output pixel covers; unused taps have weight 0). A few taps
    per pixel instead of a dense matrix product: the resize of every frame costs microseconds."""
    w = _area_weights(src, dst)
    k = int((w > 0).sum(1).max())
    index = np.zeros((dst, k), dtype=np.int64)
    weight = np.zeros((dst, k), dtype=np.float32)
    for d in range(dst):
        (nz,) = np.nonzero(w[d])
        index[d, :nz.size], weight[d, :nz.size] = nz, w[d, nz]
    return index, weight


def _grey(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's ``COLOR_RGB2GRAY`` of uint8 ``[..., 3]`` frames: 0.299 R + 0.587 G + 0.114 B in 15-bit fixed
    point, rounded (bit for bit)."""
    x = rgb.astype(np.uint32)
    return ((x[..., 0] * 9798 + x[..., 1] * 19235 + x[..., 2] * 3735 + (1 << 14)) >> 15).astype(np.uint8)


def warp_frame(rgb: np.ndarray) -> np.ndarray:
    """torchbeast's ``WarpFrame``: an RGB frame ``[H, W, 3]`` uint8 -> ``[84, 84]`` uint8 grey, bit for bit
    ``cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (84, 84), interpolation=cv2.INTER_AREA)``."""
    grey = _grey(rgb)
    (rows, wr), (cols, wc) = _area_taps(grey.shape[0], FRAME_SIZE), _area_taps(grey.shape[1], FRAME_SIZE)
    # OpenCV's order of float32 sums (along each row first, then across rows, taps in order): the same bits
    x = np.zeros((grey.shape[0], FRAME_SIZE), dtype=np.float32)
    for k in range(cols.shape[1]):
        x += grey[:, cols[:, k]].astype(np.float32) * wc[:, k]
    y = np.zeros((FRAME_SIZE, FRAME_SIZE), dtype=np.float32)
    for k in range(rows.shape[1]):
        y += wr[:, k, None] * x[rows[:, k]]
    return np.rint(y).clip(0, 255).astype(np.uint8)


def gym_frame_limit(game: str) -> int:
    """The frame limit of gym's ``<Game>NoFrameskip-v4`` registration (``max_episode_steps`` = 100 000 times the
    game's standard frameskip: 3 for Space Invaders, 4 otherwise), which torchbeast's environments inherit."""
    return 100_000 * (3 if game == "space_invaders" else 4)


class AtariGame:
    """One Atari game behind torchbeast's wrappers (``atari_wrappers.py``: ``wrap_deepmind(make_atari(id),
    clip_rewards=False, frame_stack=True)``, the paper's preprocessing), written over ``ale_py.ALEInterface``.

    The wrappers, innermost first, and the method of each:

    * gym's ``<Game>NoFrameskip-v4`` (:meth:`_act`): one frame per action, minimal action set, no sticky actions,
      ``done`` at game over or after ``max_episode_frames`` frames of the game (gym's ``TimeLimit``);
    * ``NoopResetEnv`` (:meth:`_new_game`): a new game starts with 1..``noop_max`` random no-op frames;
    * ``MaxAndSkipEnv`` (:meth:`_skip`): each action repeated ``frameskip`` frames, rewards summed, the frame is the
      pixel-wise max of the last two; a game over stops the repeat;
    * ``EpisodicLifeEnv`` (:meth:`_life_step`, :meth:`_life_reset`): a lost life (lives drop, some left) ends the
      episode; the next episode then starts with one no-op step in the same game, only a real game over starts a
      new game;
    * ``FireResetEnv`` (:meth:`_fire_reset`, games whose action 1 is FIRE and that have at least 3 actions): every
      episode, after each lost life as after a game over, starts with the steps FIRE then action 2;
    * ``WarpFrame`` (:meth:`_warp`): 84x84 grey (OpenCV's conversion and INTER_AREA resize);
    * ``FrameStack`` (:meth:`reset`, :meth:`step`): the last ``frame_stack`` frames, oldest first; at the start of
      every episode (a lost life included) the stack is refilled with copies of the episode's first frame.

    The no-op and FIRE steps of an episode start happen inside :meth:`reset`: the agent never chooses them and
    their rewards count nowhere (as in torchbeast). Rewards are not clipped.
    """

    def __init__(self, rom_path: str, game: str, *, noop_max: int, frameskip: int, frame_stack: int,
                 episodic_life: bool, max_episode_frames: int, fire_reset: bool) -> None:
        import ale_py

        self.ale = ale_py.ALEInterface()
        self.ale.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale.setFloat("repeat_action_probability", 0.0)
        self.rom_path = rom_path
        self.ale.loadROM(rom_path)
        self.game = game
        self.action_set = list(self.ale.getMinimalActionSet())
        names = [a.name for a in self.action_set]
        self.noop_max, self.frameskip, self.episodic_life = noop_max, frameskip, episodic_life
        self.max_episode_frames = max_episode_frames
        self.fire = fire_reset and len(names) >= 3 and names[1] == "FIRE"  # torchbeast's FireResetEnv condition
        self.rng = np.random.default_rng()
        h, w = self.ale.getScreenDims()
        self.screens = np.zeros((2, h, w, 3), dtype=np.uint8)  # MaxAndSkipEnv's buffer of the last two frames
        self.stack = np.zeros((frame_stack, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        self.lives = 0
        self.real_done = True  # EpisodicLifeEnv.was_real_done: the last step ended the game
        self.frames = 0  # frames of the current game (TimeLimit's counter)

    def seed(self, seed: np.random.SeedSequence) -> None:
        """Seed the no-op draws and the emulator (reloading the ROM, as gym's ``seed`` does)."""
        rng_seed, ale_seed = seed.generate_state(2)
        self.rng = np.random.default_rng(int(rng_seed))
        self.ale.setInt("random_seed", int(ale_seed) % (2**31 - 1))
        self.ale.loadROM(self.rom_path)
        self.real_done = True

    # gym's NoFrameskip-v4 in its TimeLimit
    def _act(self, action: int) -> tuple[float, bool]:
        reward = self.ale.act(self.action_set[action])
        self.frames += 1
        return float(reward), self.ale.game_over() or self.frames >= self.max_episode_frames

    def _reset_game(self) -> None:
        self.ale.reset_game()
        self.frames = 0

    # NoopResetEnv.reset
    def _new_game(self) -> np.ndarray:
        self._reset_game()
        for _ in range(int(self.rng.integers(1, self.noop_max + 1)) if self.noop_max > 0 else 0):
            if self._act(0)[1]:
                self._reset_game()
        return self.ale.getScreenRGB()

    # MaxAndSkipEnv.step
    def _skip(self, action: int) -> tuple[np.ndarray, float, bool]:
        total, done = 0.0, False
        for i in range(self.frameskip):
            reward, done = self._act(action)
            if i >= self.frameskip - 2:
                self.ale.getScreenRGB(self.screens[i - self.frameskip + 2])
            total += reward
            if done:  # torchbeast keeps the older buffer content then: the frame of a game over is never seen
                break
        return np.maximum(self.screens[0], self.screens[1]), total, done

    # EpisodicLifeEnv.step
    def _life_step(self, action: int) -> tuple[np.ndarray, float, bool]:
        frame, reward, done = self._skip(action)
        self.real_done = done
        if self.episodic_life:
            lives = self.ale.lives()
            if 0 < lives < self.lives:  # lives > 0: Q*bert shows 0 lives for a few frames before its game over
                done = True
            self.lives = lives
        return frame, reward, done

    # EpisodicLifeEnv.reset
    def _life_reset(self) -> np.ndarray:
        if self.real_done or not self.episodic_life:
            frame = self._new_game()
        else:  # after a lost life: one no-op step in the same game
            frame = self._skip(0)[0]
        self.lives = self.ale.lives()
        return frame

    # FireResetEnv.reset
    def _fire_reset(self) -> np.ndarray:
        frame = self._life_reset()
        if self.fire:
            frame, _, done = self._life_step(1)
            if done:
                self._life_reset()
            frame, _, done = self._life_step(2)
            if done:
                self._life_reset()
        return frame

    # WarpFrame
    def _warp(self, rgb: np.ndarray) -> np.ndarray:
        return warp_frame(rgb)

    # FrameStack
    def reset(self) -> np.ndarray:
        """Start the next episode (a new game after a game over or :meth:`seed`, else the next life); returns the
        stack ``[frame_stack, 84, 84]`` filled with copies of its first frame."""
        self.stack[:] = self._warp(self._fire_reset())
        return self.stack

    def new_game(self) -> np.ndarray:
        """Abandon the current game and start a new one (:meth:`reset` after a game over)."""
        self.real_done = True
        return self.reset()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        """One agent step: ``(stack [frame_stack, 84, 84], reward, done, game_over)``; ``done``: the episode ended
        (then :meth:`reset` starts the next), ``game_over``: the game ended too (or hit the frame limit)."""
        frame, reward, done = self._life_step(action)
        self.stack[:-1] = self.stack[1:]
        self.stack[-1] = self._warp(frame)
        return self.stack, reward, done, done and self.real_done


class AtariEnv(BatchedEnv):
    """``num_envs`` copies of an Atari 2600 game with the paper's preprocessing (paper.md C.4: torchbeast's wrappers
    on ``<Game>NoFrameskip-v4``; each copy an :class:`AtariGame`, which lists the wrappers):

    * 1..``noop_max`` (30) random no-op frames at each game start; sticky actions off, minimal action set;
    * each action repeated ``frameskip`` (4) frames, the frame being the max over the last two;
    * episodic life (``episodic_life=True``): a lost life ends the episode (``done``), the game goes on; the game
      restarts only at game over. ``info["game_returns"]`` lists the returns of whole games (the sum of their
      episodes' returns);
    * FIRE and action 2 at the start of every episode in games with FIRE (``fire_reset=True``), inside the
      environment: the agent's actions are never replaced;
    * 84x84 grey frames, stack of ``frame_stack`` (4): observation uint8 ``[4, 84, 84]`` (oldest frame first),
      refilled with copies of the first frame at every episode start (a lost life included);
    * a game is cut after ``max_episode_frames`` frames (none: gym's limit for ``NoFrameskip-v4``, 400 000 frames,
      300 000 for Space Invaders);
    * rewards are NOT clipped here (the learner clips them, paper.md E.3): returns are raw game scores.

    The copies run one after another in this process (about 1 500 agent steps per second on one loaded core).
    """

    def __init__(self, game: str, num_envs: int, *, noop_max: int = 30, frameskip: int = 4, frame_stack: int = 4,
                 episodic_life: bool = True, max_episode_frames: int | None = None, fire_reset: bool = True) -> None:
        try:
            from ale_py import roms
        except ImportError:
            raise ImportError("Atari needs gymnasium and ale-py: pip install 'fastweights[rl]'") from None
        self.num_envs = _positive("num_envs", num_envs)
        if not isinstance(noop_max, int) or isinstance(noop_max, bool) or noop_max < 0:
            raise ValueError(f"noop_max: expected an int >= 0, got {noop_max!r}")
        frameskip, frame_stack = _positive("frameskip", frameskip), _positive("frame_stack", frame_stack)
        self.game = _game_name(game)
        with warnings.catch_warnings():  # ale-py warns before returning None for an unknown ROM
            warnings.simplefilter("ignore")
            rom = roms.get_rom_path(self.game)
        if rom is None:
            raise ValueError(f"env: cannot make Atari game {game!r}: ale-py has no ROM {self.game!r}")
        limit = gym_frame_limit(self.game) if max_episode_frames is None else _positive("max_episode_frames",
                                                                                         max_episode_frames)
        self.episodic_life = bool(episodic_life)
        self.games = [AtariGame(str(rom), self.game, noop_max=noop_max, frameskip=frameskip, frame_stack=frame_stack,
                                episodic_life=self.episodic_life, max_episode_frames=limit,
                                fire_reset=bool(fire_reset)) for _ in range(self.num_envs)]
        self.obs_shape = (frame_stack, FRAME_SIZE, FRAME_SIZE)
        self.obs_dtype = np.dtype(np.uint8)
        self.num_actions = len(self.games[0].action_set)
        self.fire = self.games[0].fire
        self.stats = EpisodeStats(self.num_envs)
        self.game_stats = EpisodeStats(self.num_envs)

    def reset(self, seed: int | None = None) -> np.ndarray:
        for game, s in zip(self.games, np.random.SeedSequence(seed).spawn(self.num_envs)):
            game.seed(s)
        self.stats = EpisodeStats(self.num_envs)
        self.game_stats = EpisodeStats(self.num_envs)
        return np.stack([game.reset() for game in self.games])

    def step(self, actions: np.ndarray) -> StepResult:
        a = self._check_actions(actions)
        obs = np.empty((self.num_envs, *self.obs_shape), dtype=np.uint8)
        reward = np.zeros(self.num_envs, dtype=np.float32)
        done = np.zeros(self.num_envs, dtype=bool)
        game_over = np.zeros(self.num_envs, dtype=bool)
        for i, game in enumerate(self.games):
            obs[i], reward[i], done[i], game_over[i] = game.step(int(a[i]))
            if done[i]:  # SAME_STEP: the observation returned starts the next episode
                obs[i] = game.reset()
        out = self.stats.update(reward, done)
        games = self.game_stats.update(reward, game_over)
        out.update({"game_returns": games["episode_returns"], "lives": np.array([g.ale.lives() for g in self.games])})
        return StepResult(obs, reward, done, out)

    def new_game(self, rows: np.ndarray) -> np.ndarray:
        """Abandon the current games of the copies ``rows`` (int array) and start new ones; returns their first
        observations ``[len(rows), *obs_shape]`` (what the next step's actions answer). Their running episode and
        game returns restart at 0."""
        rows = np.asarray(rows, dtype=np.int64)
        for stats in (self.stats, self.game_stats):
            stats.returns[rows] = 0.0
            stats.lengths[rows] = 0
        return np.stack([self.games[i].new_game() for i in rows]) if rows.size else np.empty((0, *self.obs_shape),
                                                                                              np.uint8)
