"""Environments: the memory tasks' rules and done convention, snapshots, errors, and the Atari preprocessing on a
real ALE game (skipped without gymnasium + ale-py)."""

from __future__ import annotations

import hashlib
import importlib.util

import numpy as np
import pytest

from fastweights.rl.envs import CountRecall, RepeatFirst, RepeatPrevious, make_env, warp_frame
from fastweights.rl.envs.atari import _area_taps, _area_weights, _game_name, _grey

HAS_ALE = importlib.util.find_spec("ale_py") is not None and importlib.util.find_spec("gymnasium") is not None
needs_ale = pytest.mark.skipif(not HAS_ALE, reason="Atari tests need gymnasium and ale-py (pip install "
                                                   "'fastweights[rl]')")


def symbols(obs):
    return obs[:, :-1].argmax(1)


def play(env, policy, steps):
    """Run ``policy(obs, t) -> actions`` and collect the finished episodes' returns."""
    obs = env.reset(seed=0)
    returns, t = [], np.zeros(env.num_envs, dtype=int)
    for _ in range(steps):
        res = env.step(policy(obs, t))
        returns += list(res.info["episode_returns"])
        t = np.where(res.done, 0, t + 1)
        obs = res.obs
    return np.array(returns)


def test_repeat_first_rules_and_done_convention():
    env = RepeatFirst(64, num_symbols=3, length=5)
    obs = env.reset(seed=1)
    assert obs.shape == (64, 4) and obs.dtype == np.float32 and env.num_actions == 3
    assert (obs[:, -1] == 1).all()  # first step flag
    first = symbols(obs)
    for t in range(1, 6):
        res = env.step(first)
        assert res.reward == pytest.approx(np.full(64, 1 / 5))
        if t < 5:
            assert not res.done.any() and (res.obs[:, -1] == 0).all()
        else:  # the 5th action ends the episode: obs is the first one of the next episode
            assert res.done.all() and (res.obs[:, -1] == 1).all()
            assert res.info["episode_returns"] == pytest.approx(np.ones(64))
            assert (res.info["episode_lengths"] == 5).all()


def test_repeat_first_memoryless_return():
    env = RepeatFirst(256, num_symbols=4, length=10)
    rets = play(env, lambda obs, t: symbols(obs), 200)  # repeat what is shown: right at t=0, chance afterwards
    assert rets.mean() == pytest.approx(env.memoryless_return, abs=0.02)
    assert env.memoryless_return == pytest.approx(0.325)


def test_repeat_previous_optimal_and_memoryless():
    env = RepeatPrevious(32, num_symbols=4, length=8, delay=2)
    memory = np.zeros((32, 8), dtype=int)

    def optimal(obs, t):
        memory[np.arange(32), t] = symbols(obs)
        return memory[np.arange(32), np.maximum(t - 2, 0)]

    assert play(env, optimal, 80) == pytest.approx(np.ones(80 * 32 // 8))
    assert play(RepeatPrevious(256, length=8, delay=2), lambda obs, t: symbols(obs), 160).mean() == \
        pytest.approx(0.25, abs=0.03)


def test_count_recall_optimal():
    env = CountRecall(16, num_symbols=3, length=6)
    seen = np.zeros((16, 3), dtype=int)

    def optimal(obs, t):
        seen[t == 0] = 0
        s = symbols(obs)
        answer = np.minimum(seen[np.arange(16), s], 2)
        seen[np.arange(16), s] += 1
        return answer

    assert play(env, optimal, 60) == pytest.approx(np.ones(60 * 16 // 6))


def test_snapshot_restores_exactly():
    env = RepeatPrevious(4, length=5)
    env.reset(seed=3)
    env.step(np.zeros(4, dtype=int))
    snap = env.get_state()
    a = [env.step(np.ones(4, dtype=int)) for _ in range(7)]
    env.set_state(snap)
    b = [env.step(np.ones(4, dtype=int)) for _ in range(7)]
    for x, y in zip(a, b):
        assert np.array_equal(x.obs, y.obs) and np.array_equal(x.reward, y.reward)
        assert np.array_equal(x.done, y.done)


def test_env_errors():
    env = RepeatFirst(2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions: expected an integer array of shape"):
        env.step(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"actions: expected values in \[0, 4\)"):
        env.step(np.array([0, 4]))
    with pytest.raises(ValueError, match="unknown environment"):
        make_env("nope", 2)
    with pytest.raises(ValueError, match="env_options"):
        make_env("repeat_first", 2, {"colour": 1})
    with pytest.raises(ValueError, match="delay"):
        RepeatPrevious(2, length=3, delay=3)
    with pytest.raises(ValueError, match="num_envs"):
        RepeatFirst(0)


@pytest.mark.parametrize(("name", "rom"), [("BreakoutNoFrameskip-v4", "breakout"), ("ALE/MsPacman-v5", "ms_pacman"),
                                           ("atari:SpaceInvaders", "space_invaders"), ("Pong", "pong"),
                                           ("UpNDownNoFrameskip-v4", "up_n_down")])
def test_game_names(name, rom):
    assert _game_name(name.removeprefix("atari:")) == rom


def test_area_resize_weights_and_grey():
    w = _area_weights(5, 2)  # cells [0, 2.5) and [2.5, 5): two whole pixels and half of the middle one each
    assert w == pytest.approx(np.array([[1, 1, 0.5, 0, 0], [0, 0, 0.5, 1, 1]]) / 2.5)
    for src, dst in ((210, 84), (160, 84), (8, 4)):
        dense = _area_weights(src, dst)
        assert dense.sum(1) == pytest.approx(np.ones(dst)) and (dense >= 0).all()
        index, weight = _area_taps(src, dst)
        rebuilt = np.zeros_like(dense)
        np.add.at(rebuilt, (np.arange(dst)[:, None].repeat(index.shape[1], 1), index), weight)
        assert rebuilt == pytest.approx(dense, abs=1e-7)
    assert np.array_equal(_area_weights(8, 4), np.kron(np.eye(4), [[0.5, 0.5]]))  # integer factor: plain means
    with pytest.raises(ValueError, match="dst"):
        _area_weights(4, 8)


def test_warp_frame_equals_opencv():
    """torchbeast's WarpFrame is cv2.cvtColor(RGB2GRAY) then cv2.resize(84x84, INTER_AREA); warp_frame gives the same
    bits without OpenCV. The expected values were computed with OpenCV (5.0.0)."""
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [1, 2, 3], [200, 100, 50],
                    [227, 146, 166], [12, 145, 7], [208, 73, 4]], dtype=np.uint8)
    assert _grey(rgb).tolist() == [76, 150, 29, 255, 0, 2, 124, 172, 90, 106]
    y, x, c = np.meshgrid(np.arange(210), np.arange(160), np.arange(3), indexing="ij")
    frame = ((y * 31 + x * 17 + c * 101 + (x * y) % 7 * 13) % 256).astype(np.uint8)  # every grey level, edges
    out = warp_frame(frame)
    assert out.shape == (84, 84) and out.dtype == np.uint8
    assert out[0, :6].tolist() == [109, 142, 143, 141, 144, 114] and out[41, 40:44].tolist() == [125, 110, 118, 111]
    assert hashlib.sha256(out.tobytes()).hexdigest() == \
        "73d28713b87c70eaecf19f71de5d805d713b6d149ccefeceaeb25b1f5bb6c8fd"
    try:
        import cv2
    except ImportError:
        return
    for seed in range(3):  # where OpenCV is installed: random frames too
        img = np.random.default_rng(seed).integers(0, 256, (210, 160, 3), dtype=np.uint8)
        ref = cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (84, 84), interpolation=cv2.INTER_AREA)
        assert np.array_equal(warp_frame(img), ref)


def never_fire(rng, n):
    """Random Breakout actions without FIRE (NOOP, RIGHT, LEFT): only the environment can launch the ball."""
    return rng.choice([0, 2, 3], n)


def record_frames(env, i=0):
    """The action of every emulator frame of copy ``i`` (indices into the minimal action set), in order."""
    game, log = env.games[i], []
    real = game._act

    def act(action):
        log.append(action)
        return real(action)

    game._act = act
    return log


@needs_ale
def test_atari_observations_and_frame_stack():
    env = make_env("BreakoutNoFrameskip-v4", 3)
    try:
        obs = env.reset(seed=0)
        assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8 and env.num_actions == 4
        assert env.obs_shape == (4, 84, 84) and env.fire
        assert all(g.ale.getFloat("repeat_action_probability") == 0.0 for g in env.games)  # no sticky actions
        rng = np.random.default_rng(0)
        for _ in range(30):
            res = env.step(rng.integers(0, 4, 3))
            same = ~res.done
            # the stack shifts by one frame per step (oldest first, newest last)
            assert np.array_equal(res.obs[same, :3], obs[same, 1:])
            obs = res.obs
        assert obs[:, -1].std() > 0  # real frames, not blank
    finally:
        env.close()


@needs_ale
def test_atari_start_of_episode_steps_happen_inside_the_env():
    """torchbeast's NoopResetEnv, EpisodicLifeEnv and FireResetEnv: a game starts with 1-30 no-op frames, then the
    steps FIRE and action 2 (4 frames each); after a lost life, one no-op step then FIRE and action 2. All inside the
    environment: the agent's actions reach the emulator unchanged, and the agent never has to press FIRE."""
    env = make_env("BreakoutNoFrameskip-v4", 1)
    try:
        log = record_frames(env)
        env.reset(seed=0)
        noops = len(log) - 8
        assert 1 <= noops <= 30 and log == [0] * noops + [1] * 4 + [2] * 4
        rng = np.random.default_rng(0)
        lives_lost = games = 0
        for _ in range(400):
            log.clear()
            a = int(never_fire(rng, 1)[0])
            res = env.step(np.array([a]))
            if not res.done[0]:
                assert log == [a] * 4
            elif res.info["game_returns"].size:  # game over (it may cut the repeat short), then a new game
                games += 1
                head = log[:-8]  # the agent's 1-4 frames, then 1-30 no-op frames
                k = head.index(0) if a != 0 else 1
                assert log[-8:] == [1] * 4 + [2] * 4 and 1 <= k <= 4 and head[:k] == [a] * k
                assert set(head[k:]) == {0} and 1 <= len(head) - k <= 30 + 3 * (a == 0)
            else:  # a lost life: the agent's 4 frames, one no-op step, FIRE, action 2
                lives_lost += 1
                assert log == [a] * 4 + [0] * 4 + [1] * 4 + [2] * 4
                assert res.info["lives"][0] < 5
        assert lives_lost >= 4 and games >= 1
    finally:
        env.close()
    # without the FIRE steps, an agent that never fires never launches the ball: no life is lost
    env = make_env("BreakoutNoFrameskip-v4", 1, {"fire_reset": False})
    try:
        log = record_frames(env)
        env.reset(seed=0)
        assert 1 not in log
        rng = np.random.default_rng(0)
        assert not any(env.step(never_fire(rng, 1)).done[0] for _ in range(200))
    finally:
        env.close()


@needs_ale
def test_atari_max_and_skip():
    """torchbeast's MaxAndSkipEnv: an action is repeated for 4 frames, the step's reward is the sum of theirs and
    its frame the pixel-wise max of the last two (then warped to 84x84 grey)."""
    env = make_env("BreakoutNoFrameskip-v4", 1)
    try:
        env.reset(seed=4)
        game, frames = env.games[0], []
        real = game._act

        def act(action):
            reward, done = real(action)
            frames.append((game.ale.getScreenRGB(), reward))
            return reward, done

        game._act = act
        rng = np.random.default_rng(4)
        rewards, differ = 0.0, 0
        for _ in range(120):
            frames.clear()
            res = env.step(rng.integers(0, 4, 1))
            if res.done[0]:
                continue
            (a, _), (b, _) = frames[-2:]
            assert len(frames) == 4 and np.array_equal(res.obs[0, -1], warp_frame(np.maximum(a, b)))
            assert res.reward[0] == sum(r for _, r in frames)
            rewards += res.reward[0]
            differ += not np.array_equal(a, b)
        assert rewards > 0 and differ > 10  # some steps scored; the max mattered in many
    finally:
        env.close()


@needs_ale
def test_atari_frame_stack_refilled_at_every_episode_start():
    """torchbeast's FrameStack.reset: every episode, a lost life included, starts with 4 copies of its first frame
    (no zeros, no frame from before the lost life)."""
    env = make_env("BreakoutNoFrameskip-v4", 2)
    try:
        obs = env.reset(seed=1)
        assert all(np.array_equal(obs[i, k], obs[i, -1]) for i in range(2) for k in range(4))
        rng = np.random.default_rng(1)
        lives_lost = 0
        for _ in range(150):
            res = env.step(never_fire(rng, 2))
            for i in range(2):
                if res.done[i]:
                    assert all(np.array_equal(res.obs[i, k], res.obs[i, -1]) for k in range(3))
                    assert res.obs[i, -1].std() > 0  # a real frame
                    # the frames before the lost life are gone (the ball and paddle have moved since)
                    assert not np.array_equal(res.obs[i, 0], obs[i, -1])
                else:
                    assert np.array_equal(res.obs[i, :3], obs[i, 1:])
            lives_lost += int((res.done & (res.info["lives"] > 0)).sum())
            obs = res.obs
        assert lives_lost >= 4
    finally:
        env.close()


@needs_ale
def test_atari_noop_reset_varies_the_start():
    env = make_env("atari:Breakout", 6)
    fixed = make_env("atari:Breakout", 2, {"noop_max": 0})
    try:
        env.reset(seed=0)
        fixed.reset(seed=0)
        starts = [g.frames for g in env.games]  # frames of the game so far: no-ops + FIRE and action 2 steps
        assert len(set(starts)) > 1 and all(1 + 8 <= f <= 30 + 8 for f in starts)
        assert [g.frames for g in fixed.games] == [8, 8]
    finally:
        env.close()
        fixed.close()


@needs_ale
def test_atari_episodic_life():
    env = make_env("BreakoutNoFrameskip-v4", 1)
    try:
        env.reset(seed=1)
        rng = np.random.default_rng(1)
        lives_before, life_ends, game_returns, life_returns = 5, 0, [], []
        for _ in range(600):
            res = env.step(rng.choice([0, 1, 2, 3], 1, p=[0.3, 0.1, 0.3, 0.3]))
            life_returns += list(res.info["episode_returns"])
            lives = int(res.info["lives"][0])
            if res.done[0]:
                life_ends += 1
                if res.info["game_returns"].size:  # game over: a new game with all lives
                    game_returns += list(res.info["game_returns"])
                    assert lives == 5
                    assert game_returns[-1] == pytest.approx(sum(life_returns[-5:]))
                else:  # a lost life ends the episode but the game goes on
                    assert lives == lives_before - 1
            else:
                assert lives == lives_before
            lives_before = lives
            if len(game_returns) == 2:
                break
        assert len(game_returns) == 2 and life_ends == 10  # Breakout has 5 lives
    finally:
        env.close()


@needs_ale
def test_atari_without_episodic_life_ends_only_at_game_over():
    env = make_env("BreakoutNoFrameskip-v4", 1, {"episodic_life": False})
    try:
        env.reset(seed=2)
        rng = np.random.default_rng(2)
        for _ in range(1000):
            res = env.step(rng.integers(0, 4, 1))
            if res.done[0]:
                assert int(res.info["lives"][0]) == 5
                assert res.info["game_returns"] == pytest.approx(res.info["episode_returns"])
                break
        else:
            pytest.fail("no game over in 1000 random steps")
    finally:
        env.close()


@needs_ale
def test_atari_frame_limit_ends_the_game():
    """gym's TimeLimit: the game ends after max_episode_frames frames, start-of-game no-ops and FIRE included."""
    env = make_env("BreakoutNoFrameskip-v4", 1, {"max_episode_frames": 120, "noop_max": 0})
    assert make_env("atari:SpaceInvaders", 1).games[0].max_episode_frames == 300_000  # gym's v4 limits
    assert make_env("atari:Pong", 1).games[0].max_episode_frames == 400_000
    try:
        env.reset(seed=3)
        steps = 0
        while True:
            res = env.step(np.array([0]))  # the ball is launched and lost: a life, then the limit
            steps += 1
            if res.info["game_returns"].size:
                break
        assert steps == (120 - 8 - 4 - 8) // 4  # 8 start frames, and after the lost life a no-op and FIRE/2
    finally:
        env.close()


@pytest.mark.filterwarnings("ignore:Rom")
def test_make_atari_without_ale_says_what_to_install():
    if HAS_ALE:
        with pytest.raises(ValueError, match="cannot make Atari game"):
            make_env("NoSuchGameNoFrameskip-v4", 1)
        with pytest.raises(ValueError, match="noop_max"):
            make_env("atari:Breakout", 1, {"noop_max": -1})
    else:
        with pytest.raises(ImportError, match="fastweights\\[rl\\]"):
            make_env("BreakoutNoFrameskip-v4", 1)


@pytest.mark.skipif(importlib.util.find_spec("gymnasium") is None, reason="needs gymnasium")
def test_gymnasium_env_same_step_autoreset():
    env = make_env("gym:CartPole-v1", 3)
    try:
        obs = env.reset(seed=0)
        assert obs.shape == (3, 4) and obs.dtype == np.float32 and env.num_actions == 2
        ended = 0
        for _ in range(200):
            res = env.step(np.zeros(3, dtype=int))  # always push left: episodes end quickly
            ended += int(res.done.sum())
            assert len(res.info["episode_returns"]) == res.done.sum()
            # SAME_STEP: an episode's return equals its length (reward 1 per step), never a stray reset step
            assert np.array_equal(res.info["episode_returns"], res.info["episode_lengths"])
        assert ended >= 3
    finally:
        env.close()
    with pytest.raises(ValueError, match="cannot make gymnasium env"):
        make_env("gym:NoSuchEnv-v0", 1)
