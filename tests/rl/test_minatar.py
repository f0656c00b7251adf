"""MinAtar environments: the wrapper equals the minatar package's own game step for step (actions mapped through the
minimal action set, sticky actions, self-reset), episode accounting, the step limit, exact snapshots through a safe
checkpoint load, seeds, errors; the conv torso; and a MinAtar training run that resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("minatar", reason="MinAtar tests need the minatar package (pip install 'fastweights[minatar]')")

from fastweights.rl import train
from fastweights.rl.agent import AgentConfig, ConvTorso, build_agent
from fastweights.rl.config import rl_config_from_dict
from fastweights.rl.envs import make_env
from fastweights.rl.minatar import GAMES, MinAtarEnv, game_name
from fastweights.rl.train import checkpoint_types
from fastweights.runs.directory import load_checkpoint, read_json, save_checkpoint
from fastweights.tasks import resolve_config


def random_actions(env: MinAtarEnv, steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, env.num_actions, (steps, env.num_envs))


@pytest.mark.parametrize("game", GAMES)
def test_wrapper_equals_the_package_game(game):
    """Copy i seeded with seed + i plays exactly the package's Environment seeded the same way; a copy whose game
    ended returns done=True with the first state of its next game."""
    from minatar import Environment

    env = MinAtarEnv(game, 3)
    raw = [Environment(game) for _ in range(3)]
    for i, r in enumerate(raw):
        r.seed(5 + i)
        r.reset()
    obs = env.reset(seed=5)
    assert obs.dtype == np.uint8 and obs.shape == (3, *env.obs_shape) and set(np.unique(obs)) <= {0, 1}
    assert env.num_actions == len(raw[0].minimal_action_set())
    episodes = 0
    for actions in random_actions(env, 400):
        res = env.step(actions)
        for i, r in enumerate(raw):
            reward, terminal = r.act(raw[i].minimal_action_set()[actions[i]])
            assert res.reward[i] == reward and res.done[i] == terminal
            if terminal:
                r.reset()
                episodes += 1
            np.testing.assert_array_equal(res.obs[i], r.state().transpose(2, 0, 1))
    if game == "freeway":
        assert episodes == 0  # Freeway's episodes last 2500 steps


def test_episode_returns_and_lengths_add_up():
    env = MinAtarEnv("breakout", 4)
    env.reset(seed=0)
    running_r, running_n = np.zeros(4), np.zeros(4, dtype=int)
    reported = 0
    for actions in random_actions(env, 600):
        res = env.step(actions)
        running_r += res.reward
        running_n += 1
        ended = np.flatnonzero(res.done)
        np.testing.assert_array_equal(res.info["episode_envs"], ended)
        np.testing.assert_array_equal(res.info["episode_returns"], running_r[ended])
        np.testing.assert_array_equal(res.info["episode_lengths"], running_n[ended])
        running_r[ended], running_n[ended] = 0, 0
        reported += len(ended)
    assert reported > 4  # random play loses Breakout's ball within a few dozen steps


def test_max_episode_steps_ends_episodes():
    env = MinAtarEnv("freeway", 2, max_episode_steps=7)  # Freeway's own episodes last 2500 steps
    env.reset(seed=1)
    lengths = []
    for t, actions in enumerate(random_actions(env, 21), start=1):
        res = env.step(actions)
        assert res.done.all() == (t % 7 == 0)
        lengths += list(res.info["episode_lengths"])
    assert lengths == [7] * 6


@pytest.mark.parametrize("game", GAMES)
def test_snapshot_through_a_safe_checkpoint_restores_exactly(tmp_path, game):
    env = MinAtarEnv(game, 4)
    env.reset(seed=3)
    for actions in random_actions(env, 150, seed=1):
        env.step(actions)
    save_checkpoint(tmp_path / "c.pt", {"env": env.get_state()})
    other = MinAtarEnv(game, 4)
    other.reset(seed=99)
    # weights_only=True: plain data and the NumPy arrays and generators RL checkpoints declare
    other.set_state(load_checkpoint(tmp_path / "c.pt", types=checkpoint_types())["env"])
    for actions in random_actions(env, 300, seed=2):
        a, b = env.step(actions), other.step(actions)
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.reward, b.reward)
        np.testing.assert_array_equal(a.done, b.done)
        np.testing.assert_array_equal(a.info["episode_returns"], b.info["episode_returns"])


def test_seeds_repeat_and_differ():
    def trace(seed):
        env = MinAtarEnv("space_invaders", 2)
        out = [env.reset(seed=seed)]
        out += [env.step(a).obs for a in random_actions(env, 50)]
        return np.stack(out)

    np.testing.assert_array_equal(trace(4), trace(4))
    assert not np.array_equal(trace(4), trace(5))


def test_names():
    assert [game_name(n) for n in ("minatar:SpaceInvaders", "MinAtar/Breakout-v1", "minatar:seaquest")] == [
        "space_invaders", "breakout", "seaquest"]
    env = make_env("minatar:asterix", 2, {"sticky_action_prob": 0.0})
    assert isinstance(env, MinAtarEnv) and env.obs_shape == (4, 10, 10) and env.num_actions == 5


@pytest.mark.parametrize(("name", "options", "fragment"), [
    ("minatar:pong", {}, "unknown MinAtar game 'minatar:pong'"),
    ("minatar:breakout", {"sticky_action_prob": 1.5}, "sticky_action_prob: expected a number in [0, 1], got 1.5"),
    ("minatar:breakout", {"max_episode_steps": 0}, "max_episode_steps: expected a positive int, got 0"),
    ("minatar:breakout", {"difficulty_ramping": "yes"}, "difficulty_ramping: expected a bool"),
    ("minatar:breakout", {"frame_stack": 4}, "env_options:"),
])
def test_bad_options(name, options, fragment):
    with pytest.raises(ValueError) as e:
        make_env(name, 2, options)
    assert fragment in str(e.value)


def test_snapshot_of_another_size_is_refused():
    a, b = MinAtarEnv("breakout", 2), MinAtarEnv("breakout", 3)
    a.reset(seed=0)
    b.reset(seed=0)
    with pytest.raises(ValueError, match="a snapshot of 2 MinAtar copies cannot restore 3"):
        b.set_state(a.get_state())


def test_conv_torso_and_agent():
    torso = ConvTorso((4, 10, 10), 32)
    assert sum(p.numel() for p in torso.parameters()) == (4 * 9 + 1) * 16 + (16 * 64 + 1) * 32
    obs = torch.randint(0, 2, (5, 4, 10, 10), dtype=torch.uint8)
    assert torso(obs).shape == (5, 32)
    torch.testing.assert_close(torso(obs), torso(obs.float()))
    agent = build_agent(AgentConfig(core="delta_net", obs_shape=(4, 10, 10), num_actions=3, torso="conv",
                                    torso_dim=32, d_model=16, num_heads=2, d_ff=32))
    out = agent(obs.view(1, 5, 4, 10, 10), torch.zeros(1, 5, dtype=torch.bool), torch.zeros(1, 5))
    assert out.logits.shape == (1, 5, 3) and out.baseline.shape == (1, 5)
    with pytest.raises(ValueError, match=r"torso: conv needs \[C, H, W\] observations"):
        AgentConfig(core="lstm", obs_shape=(40,), num_actions=3, torso="conv")
    with pytest.raises(ValueError, match="conv torso needs frames of at least 3x3"):
        ConvTorso((4, 2, 10))


TINY = ["num_envs=4", "unroll_length=5", "total_steps=120", "log_interval=2", "checkpoint_interval=2", "torso_dim=16",
        "d_model=8", "num_heads=2", "d_ff=16", "lstm_hidden=8", "eval_episodes=2", "eval_runs=1", "eval_envs=2"]


@pytest.mark.parametrize("model", ["delta_rnn", "lstm"])
def test_minatar_run_resumes_exactly(tmp_path, model):
    """The minatar preset's run, cut after 3 updates and resumed, ends equal to an uninterrupted one (the games are
    restored from the checkpoint, not restarted)."""
    straight = train(resolve_config("rl", "minatar", TINY, env="minatar:space_invaders", model=model), tmp_path / "a",
                     quiet=True)
    cfg = rl_config_from_dict(read_json(tmp_path / "a" / "config.json"))
    assert cfg.torso == "conv" and cfg.env == "minatar:space_invaders"
    train(cfg, tmp_path / "b", quiet=True, stop_after_updates=3)
    resumed = train(cfg, tmp_path / "b", resume=True, quiet=True)
    assert resumed["updates"] == straight["updates"] == 6
    a = load_checkpoint(tmp_path / "a" / "last.pt", types=checkpoint_types())["agent"]
    b = load_checkpoint(tmp_path / "b" / "last.pt", types=checkpoint_types())["agent"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight["eval"] == resumed["eval"]
