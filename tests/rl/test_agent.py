"""The RL agent: parameter counts against paper.md A.11, episode resets equal independent unrolls for every core,
step-by-step acting equals the sequence forward, the per-step state-gradient cut, and input validation."""

from __future__ import annotations

import pytest
import torch

from fastweights.models import count_parameters
from fastweights.rl import Agent, AgentConfig, rl_cores

ATARI = (4, 84, 84)

# paper.md A.11 (18-action game): totals of the official models
ATARI_TOTALS = {
    "linear_transformer": 1_520_227, "delta_net": 1_521_251, "rdn": 1_546_083, "delta_rnn": 1_587_811,
    "feedforward": 1_094_134,
}
CORE_COUNTS = {  # the core alone (input projection 257 -> 128 + 2 blocks; the LSTM 257 -> 256)
    "linear_transformer": 428_544, "delta_net": 429_568, "rdn": 454_400, "delta_rnn": 496_128, "lstm": 527_360,
}


def atari_agent(core: str) -> Agent:
    with torch.device("meta"):  # sizes only
        return Agent(AgentConfig(core, ATARI, 18))


@pytest.mark.parametrize("core", list(ATARI_TOTALS))
def test_atari_parameter_counts_match_spec(core):
    agent = atari_agent(core)
    assert count_parameters(agent) == ATARI_TOTALS[core]
    assert count_parameters(agent.torso) == 97_744 + 991_488  # IMPALA stem + FC 3872 -> 256


@pytest.mark.parametrize("core", list(CORE_COUNTS))
def test_core_parameter_counts_match_spec(core):
    assert count_parameters(atari_agent(core).core) == CORE_COUNTS[core]


def test_lstm_agent_total():
    # torso + LSTM core + heads on the 256-d LSTM output: 1 089 232 + 527 360 + (256*18+18) + 257.
    # (paper.md A.11 lists 1 621 493, 18 more: that sum takes the policy head from 257 inputs; the official Net
    # builds both heads on the LSTM's 256 outputs.)
    assert count_parameters(atari_agent("lstm")) == 1_621_475


def test_impala_forward_shapes():
    torch.manual_seed(0)
    agent = Agent(AgentConfig("delta_net", ATARI, 6, d_model=16, num_heads=2, d_ff=32, torso_dim=32))
    obs = torch.randint(0, 256, (2, 3, *ATARI), dtype=torch.uint8)
    out = agent(obs, torch.zeros(2, 3, dtype=torch.bool), torch.randn(2, 3))
    assert out.logits.shape == (2, 3, 6) and out.baseline.shape == (2, 3)


# The numba kernels (the CPU default of these ops) cost seconds of JIT per dtype; the layer tests check that
# every implementation computes the same, so the agent tests use the pure-PyTorch one.
PURE_TORCH = {"delta_rnn": {"impl": "checkpointed"}, "delta_lstm": {"impl": "checkpointed"},
              "rdn": {"impl": "checkpointed"}}


def tiny(core: str, **kw) -> Agent:
    torch.manual_seed(0)
    cfg = AgentConfig(core, (5,), 3, torso_dim=12, d_model=8, num_heads=2, d_ff=16, lstm_hidden=10,
                      layer_options=PURE_TORCH.get(core, {}), **kw)
    return Agent(cfg).double()


def inputs(B: int, T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(B, T, 5, generator=g, dtype=torch.float64)
    reward = torch.randn(B, T, generator=g, dtype=torch.float64)
    action = torch.randint(0, 3, (B, T), generator=g)
    return obs, reward, action


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("core", "prev_action"), [(c, True) for c in rl_cores()] + [("delta_net", False)])
def test_reset_equals_independent_unrolls(core, prev_action):
    agent = tiny(core, prev_action=prev_action)
    B, T, k = 2, 7, 3
    pre_obs, pre_r, pre_a = inputs(B, 4, seed=1)
    state0 = agent(pre_obs, torch.zeros(B, 4, dtype=torch.bool), pre_r, pre_a).state  # a non-zero state
    obs, r, a = inputs(B, T, seed=2)
    done = torch.zeros(B, T, dtype=torch.bool)
    done[0, k] = True  # row 0: a new episode starts at step k; row 1 goes on
    full = agent(obs, done, r, a, state0)
    # row 0 from step k = a fresh episode, whatever came before (including prev reward/action at k)
    r_fresh, a_fresh = r[:1, k:].clone(), a[:1, k:].clone()
    r_fresh[0, 0], a_fresh[0, 0] = 123.0, 2
    fresh = agent(obs[:1, k:], done[:1, k:], r_fresh, a_fresh, None)
    close(full.logits[0, k:], fresh.logits[0])
    close(full.baseline[0, k:], fresh.baseline[0])
    # both rows: the unroll cut at k and continued from the carried state
    first = agent(obs[:, :k], done[:, :k], r[:, :k], a[:, :k], state0)
    second = agent(obs[:, k:], done[:, k:], r[:, k:], a[:, k:], first.state)
    close(full.logits, torch.cat([first.logits, second.logits], 1))
    close(full.baseline, torch.cat([first.baseline, second.baseline], 1))


@pytest.mark.parametrize("core", rl_cores())
def test_act_steps_equal_forward(core):
    agent = tiny(core, prev_action=True)
    B, T = 3, 6
    obs, r, a = inputs(B, T, seed=3)
    done = torch.zeros(B, T, dtype=torch.bool)
    done[1, 2] = done[2, 4] = True
    full = agent(obs, done, r, a)
    state = agent.initial_state(B)
    for t in range(T):
        out = agent.act(obs[:, t], done[:, t], r[:, t], a[:, t], state, greedy=True)
        state = out.state
        close(out.logits, full.logits[:, t])
        close(out.baseline, full.baseline[:, t])
        assert torch.equal(out.action, full.logits[:, t].argmax(-1))


@pytest.mark.parametrize("core", [c for c in rl_cores() if c not in ("feedforward",)])
def test_cut_state_grad_every_step(core):
    agent = tiny(core)
    obs, r, _ = inputs(2, 5, seed=4)
    obs.requires_grad_(True)
    done = torch.zeros(2, 5, dtype=torch.bool)
    full = agent(obs, done, r)
    cut = agent(obs, done, r, cut_state_grad=True)
    close(full.logits, cut.logits)  # same values
    (g_full,) = torch.autograd.grad(full.logits[:, -1].sum(), obs)
    (g_cut,) = torch.autograd.grad(cut.logits[:, -1].sum(), obs)
    assert g_full[:, 0].abs().sum() > 0
    if core == "lstm":  # the official LSTM baseline back-propagates through the unroll: never cut
        close(g_full, g_cut)
    else:  # no path from an earlier step's input through the carried state
        assert g_cut[:, :-1].abs().sum() == 0
        assert g_cut[:, -1].abs().sum() > 0


def test_sampled_actions_follow_the_generator():
    agent = tiny("delta_net")
    obs, r, _ = inputs(4, 1, seed=5)
    done = torch.ones(4, dtype=torch.bool)
    a1 = agent.act(obs[:, 0], done, r[:, 0], generator=torch.Generator().manual_seed(3)).action
    a2 = agent.act(obs[:, 0], done, r[:, 0], generator=torch.Generator().manual_seed(3)).action
    assert torch.equal(a1, a2) and a1.dtype == torch.long


def test_initial_state_shapes():
    assert tiny("feedforward").initial_state(3) == ()
    h, c = tiny("lstm").initial_state(3)
    assert h.shape == c.shape == (1, 3, 10)
    states = tiny("rdn").initial_state(3)
    assert len(states) == 2  # one per layer


@pytest.mark.parametrize(("kwargs", "error", "fragment"), [
    ({"core": "transformer"}, ValueError, "KV cache"),
    ({"core": "nope"}, ValueError, "core: unknown core 'nope'; expected one of"),
    ({"core": "delta_net", "torso": "impala"}, ValueError, "impala needs"),
    ({"core": "delta_net", "torso": "cnn"}, ValueError, "torso"),
    ({"core": "delta_net", "layer_options": {"bogus": 1}}, ValueError, "bogus"),
    ({"core": "lstm", "layer_options": {"version": 1}}, ValueError, "takes none"),
    ({"core": "delta_net", "num_actions": 0}, ValueError, "num_actions"),
])
def test_bad_config(kwargs, error, fragment):
    base = {"obs_shape": (5,), "num_actions": 3}
    with pytest.raises(error, match=fragment):
        AgentConfig(**{**base, **kwargs})


def test_bad_inputs():
    agent = tiny("delta_net", prev_action=True)
    obs, r, a = inputs(2, 3)
    done = torch.zeros(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="batch first"):
        agent(obs.transpose(0, 1)[..., :4], done, r, a)
    with pytest.raises(TypeError, match="done: expected a bool"):
        agent(obs, done.long(), r, a)
    with pytest.raises(ValueError, match="done: expected shape"):
        agent(obs, done[:, :2], r, a)
    with pytest.raises(ValueError, match="prev_action"):
        agent(obs, done, r, None)
    with pytest.raises(TypeError, match="prev_reward"):
        agent(obs, done, r.long(), a)
    with pytest.raises(ValueError, match="batch_size"):
        agent.initial_state(0)
    with pytest.raises(ValueError, match="done: expected shape"):
        agent.act(obs[:, 0], done, r[:, 0], a[:, 0])
