"""RLlib adapter: state flattening (no ray needed), the gymnasium wrapper of the memory tasks, and the
TorchRLModule itself (skipped when ray[rllib] is not installed)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from fastweights.rl import Agent, AgentConfig, rl_cores
from fastweights.rl.rllib import agent_from_spaces, batch_axes, flatten_state, unflatten_state

HAS_GYM = importlib.util.find_spec("gymnasium") is not None
HAS_RLLIB = importlib.util.find_spec("ray") is not None and HAS_GYM

SMALL = {"torso_dim": 8, "d_model": 8, "num_heads": 2, "d_ff": 16, "lstm_hidden": 6}
PURE_TORCH = {"delta_rnn": {"impl": "checkpointed"}, "delta_lstm": {"impl": "checkpointed"},
              "rdn": {"impl": "checkpointed"}}


def small_agent(core: str) -> Agent:
    torch.manual_seed(0)
    return Agent(AgentConfig(core, (5,), 3, layer_options=PURE_TORCH.get(core, {}), **SMALL))


@pytest.mark.parametrize("core", rl_cores())
def test_state_flattening_round_trip(core):
    agent = small_agent(core)
    obs = torch.randn(3, 4, 5)
    state = agent(obs, torch.zeros(3, 4, dtype=torch.bool)).state
    flat = flatten_state(agent, state)
    assert all(v.shape[0] == 3 for v in flat.values())
    back = unflatten_state(agent, flat)
    a, b = flatten_state(agent, back), flat
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    # the rebuilt state carries on exactly like the original
    more = torch.randn(3, 2, 5)
    no_done = torch.zeros(3, 2, dtype=torch.bool)
    torch.testing.assert_close(agent(more, no_done, state=state).logits, agent(more, no_done, state=back).logits)


def test_batch_axes():
    assert batch_axes(small_agent("lstm")) == [1, 1]
    assert set(batch_axes(small_agent("delta_rnn"))) == {0}
    assert batch_axes(small_agent("feedforward")) == []


def test_unflatten_rejects_wrong_keys():
    agent = small_agent("delta_net")
    with pytest.raises(ValueError, match="state: expected keys"):
        unflatten_state(agent, {"x": torch.zeros(1)})


@pytest.mark.skipif(not HAS_GYM, reason="needs gymnasium")
def test_memory_task_env_and_agent_from_spaces():
    from fastweights.rl.rllib import MemoryTaskEnv

    env = MemoryTaskEnv({"task": "repeat_first", "length": 3})
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and env.action_space.n == 4
    target = int(obs[:-1].argmax())
    total, done = 0.0, False
    while not done:
        obs, r, done, trunc, _ = env.step(target)
        total += r
    assert total == pytest.approx(1.0) and not trunc
    agent = agent_from_spaces(env.observation_space, env.action_space, {"core": "delta_net", "max_seq_len": 9,
                                                                       **SMALL})
    assert agent.config.obs_shape == (5,) and agent.config.num_actions == 4
    with pytest.raises(ValueError, match="core"):
        agent_from_spaces(env.observation_space, env.action_space, {})
    with pytest.raises(ValueError, match="Discrete"):
        agent_from_spaces(env.observation_space, env.observation_space, {"core": "lstm"})
    with pytest.raises(ValueError, match="task"):
        MemoryTaskEnv({"task": "nope"})


@pytest.mark.skipif(not HAS_RLLIB, reason="needs ray[rllib] (installed separately: it pins its own gymnasium)")
@pytest.mark.parametrize("core", ["delta_net", "lstm", "rdn"])
def test_rllib_module_forward_and_state(core):
    import gymnasium as gym
    from ray.rllib.core.columns import Columns

    from fastweights.rl.rllib import FastWeightRLModule

    module = FastWeightRLModule(observation_space=gym.spaces.Box(0.0, 1.0, (5,), np.float32),
                                action_space=gym.spaces.Discrete(3),
                                model_config={"core": core, "max_seq_len": 4, "layer_options": PURE_TORCH.get(core, {}),
                                              **SMALL})
    init = module.get_initial_state()
    assert all(isinstance(v, np.ndarray) for v in init.values())
    B, T = 2, 6
    state_in = {k: torch.from_numpy(v)[None].repeat(B, *([1] * v.ndim)) for k, v in init.items()}
    obs = torch.rand(B, T, 5)
    full = module.forward_train({Columns.OBS: obs, Columns.STATE_IN: state_in})
    assert full[Columns.ACTION_DIST_INPUTS].shape == (B, T, 3)
    values = module.compute_values({Columns.OBS: obs, Columns.STATE_IN: state_in})
    torch.testing.assert_close(values, full[Columns.EMBEDDINGS])
    first = module.forward_inference({Columns.OBS: obs[:, :3], Columns.STATE_IN: state_in})
    second = module.forward_inference({Columns.OBS: obs[:, 3:], Columns.STATE_IN: first[Columns.STATE_OUT]})
    torch.testing.assert_close(torch.cat([first[Columns.ACTION_DIST_INPUTS], second[Columns.ACTION_DIST_INPUTS]], 1),
                               full[Columns.ACTION_DIST_INPUTS])


@pytest.mark.skipif(not HAS_RLLIB, reason="needs ray[rllib] (installed separately: it pins its own gymnasium)")
def test_rllib_target_network_api():
    import gymnasium as gym
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis.target_network_api import TARGET_NETWORK_ACTION_DIST_INPUTS

    from fastweights.rl.rllib import FastWeightRLModule

    module = FastWeightRLModule(observation_space=gym.spaces.Box(0.0, 1.0, (5,), np.float32),
                                action_space=gym.spaces.Discrete(3), model_config={"core": "delta_net", **SMALL})
    module.make_target_networks()
    (main, target), = module.get_target_network_pairs()
    assert main is module.agent and target is not main
    state_in = {k: torch.from_numpy(v)[None].repeat(2, *([1] * v.ndim)) for k, v in module.get_initial_state().items()}
    batch = {Columns.OBS: torch.rand(2, 3, 5), Columns.STATE_IN: state_in}
    torch.testing.assert_close(module.forward_target(batch)[TARGET_NETWORK_ACTION_DIST_INPUTS],
                               module.forward_train(batch)[Columns.ACTION_DIST_INPUTS])
