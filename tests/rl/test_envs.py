"""Environments: the memory tasks' rules and done convention, snapshots, errors, and the Atari preprocessing on a
real ALE game (skipped without gymnasium + ale-py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from fastweights.rl.envs import CountRecall, RepeatFirst, RepeatPrevious, _game_name, make_env

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


@needs_ale
def test_atari_observations_and_frame_stack():
    env = make_env("BreakoutNoFrameskip-v4", 3, {"num_threads": 1})
    try:
        obs = env.reset(seed=0)
        assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8 and env.num_actions == 4
        assert env.obs_shape == (4, 84, 84)
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
def test_atari_noop_reset_varies_the_start():
    env = make_env("atari:Breakout", 6, {"num_threads": 1})
    fixed = make_env("atari:Breakout", 2, {"num_threads": 1, "noop_max": 0})
    try:
        env.reset(seed=0)
        fixed.reset(seed=0)
        assert len(set(env.frame_number.tolist())) > 1  # 1..30 random no-ops of 4 frames each
        assert len(set(fixed.frame_number.tolist())) == 1
        assert env.frame_number.max() <= fixed.frame_number.max() + 4 * 30
    finally:
        env.close()
        fixed.close()


@needs_ale
def test_atari_episodic_life():
    env = make_env("BreakoutNoFrameskip-v4", 1, {"num_threads": 1})
    try:
        env.reset(seed=1)
        rng = np.random.default_rng(1)
        lives_before, life_ends, game_returns, life_returns = 5, 0, [], []
        for _ in range(3000):
            res = env.step(rng.integers(0, 4, 1))
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
    env = make_env("BreakoutNoFrameskip-v4", 1, {"num_threads": 1, "episodic_life": False})
    try:
        env.reset(seed=2)
        rng = np.random.default_rng(2)
        for _ in range(3000):
            res = env.step(rng.integers(0, 4, 1))
            if res.done[0]:
                assert int(res.info["lives"][0]) == 5
                assert res.info["game_returns"] == pytest.approx(res.info["episode_returns"])
                break
        else:
            pytest.fail("no game over in 3000 random steps")
    finally:
        env.close()


@pytest.mark.filterwarnings("ignore:Rom")
def test_make_atari_without_ale_says_what_to_install():
    if HAS_ALE:
        with pytest.raises(ValueError, match="cannot make Atari game"):
            make_env("NoSuchGameNoFrameskip-v4", 1)
    else:
        with pytest.raises(ImportError, match="fastweights\\[rl\\]"):
            make_env("BreakoutNoFrameskip-v4", 1)


@needs_ale
def test_atari_fire_after_life_loss():
    env = make_env("BreakoutNoFrameskip-v4", 1, {"num_threads": 1})
    try:
        env.reset(seed=3)
        assert env.fire_action == 1
        rng = np.random.default_rng(3)
        checked = 0
        for _ in range(2000):
            a = rng.integers(0, 4, 1)
            forced = bool(env.fire_next[0])
            res = env.step(a)
            assert res.info["actions"][0] == (1 if forced else a[0])
            checked += forced
            if checked == 2:
                break
        assert checked == 2
    finally:
        env.close()


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
