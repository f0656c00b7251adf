"""The one block skeleton (three LayerNorm placements) and the block stack every model runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastweights.layers import build_layer
from fastweights.models import BlockStack, LMConfig, ModelConfig, ResidualBlock, build_lm, build_model
from fastweights.rl import Agent, AgentConfig


def randomised(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p))
    return module


@pytest.mark.parametrize("norm", ["pre_ln", "post_ln", "paper"])
def test_block_equals_its_formula(norm):
    torch.manual_seed(0)
    block = randomised(ResidualBlock(build_layer("delta_net", 8, 2), 16, norm=norm).double()).eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)

    def ff(h):
        return block.ff.lin2(block.ff.lin1(h).relu())

    def layer(h):
        return block.layer(h)[0]

    if norm == "pre_ln":
        h = x + layer(block.norm1(x))
        expected = h + ff(block.norm2(h))
    elif norm == "post_ln":
        h = block.norm1(x + layer(x))
        expected = block.norm2(h + ff(h))
    else:
        h = block.norm1(x)
        h = h + layer(h)
        expected = h + ff(block.norm2(h))
    torch.testing.assert_close(block(x)[0], expected)


def test_parameter_order_of_each_placement():
    # optimizer checkpoints index parameters by position: each placement keeps the order it always had
    layer = build_layer("feedforward", 4, 1)
    pre = [n.split(".")[0] for n, _ in ResidualBlock(layer, 8, norm="pre_ln").named_parameters()]
    post = [n.split(".")[0] for n, _ in ResidualBlock(layer, 8, norm="post_ln").named_parameters()]
    assert list(dict.fromkeys(pre)) == ["norm1", "layer", "norm2", "ff"]
    assert list(dict.fromkeys(post)) == ["layer", "norm1", "ff", "norm2"]


def test_stack_carries_states_and_resets():
    torch.manual_seed(0)
    stack = BlockStack.build(2, lambda: build_layer("delta_rnn", 8, 2), 16).double().eval()
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    reset = torch.zeros(3, 6, dtype=torch.bool)
    reset[1, 4] = True
    y, states = stack(x, None, reset)
    assert len(states) == 2
    y1, s1 = stack(x[:, :4], stack.initial_state(3), reset[:, :4])
    y2, s2 = stack(x[:, 4:], list(s1), reset[:, 4:])
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y)
    for a, b in zip(states, s2, strict=True):
        for u, v in zip(a, b, strict=True):
            torch.testing.assert_close(u, v)
    # the stack is the blocks in order
    h, by_hand = x, []
    for block in stack:
        h, s = block(h, None, reset)
        by_hand.append(s)
    torch.testing.assert_close(h, y)
    assert isinstance(stack[:1], BlockStack) and len(stack[:1]) == 1


def test_every_model_runs_one_stack_with_unchanged_keys():
    lm = build_lm(LMConfig("delta_net", 30, d_model=8, num_layers=2, num_heads=2, d_ff=16, cutoffs=(10,)))
    seq = build_model(ModelConfig("delta_net", 7, 5, d_model=8, num_layers=2, num_heads=2, d_ff=16))
    agent = Agent(AgentConfig("delta_net", (6,), 3, d_model=8, num_heads=2, d_ff=16, torso_dim=12))
    for model, prefix in ((lm, "blocks.1."), (seq, "blocks.1."), (agent, "core.blocks.1.")):
        stack = model.core.blocks if model is agent else model.blocks
        assert isinstance(stack, BlockStack) and len(stack) == 2
        assert f"{prefix}norm1.weight" in model.state_dict() and f"{prefix}layer.slow_net.weight" in model.state_dict()


def test_bad_arguments():
    layer = build_layer("delta_net", 8, 2)
    with pytest.raises(ValueError, match=r"norm: expected one of \['pre_ln', 'post_ln', 'paper'\], got 'sandwich'"):
        ResidualBlock(layer, 16, norm="sandwich")
    with pytest.raises(ValueError, match="num_layers: expected a positive integer, got 0"):
        BlockStack.build(0, lambda: layer, 16)
    stack = BlockStack.build(2, lambda: build_layer("delta_net", 8, 2), 16)
    with pytest.raises(TypeError, match=r"states: expected a tuple of 2 layer states .* got 1 states"):
        stack(torch.randn(1, 2, 8), (None,))
    with pytest.raises(TypeError, match=r"states: expected a tuple of 2 layer states .* got Tensor"):
        stack(torch.randn(1, 2, 8), torch.zeros(2))


def test_models_check_their_state_in_one_place():
    lm = build_lm(LMConfig("delta_net", 30, d_model=8, num_layers=2, num_heads=2, d_ff=16, cutoffs=(10,)))
    seq = build_model(ModelConfig("delta_net", 7, 5, d_model=8, num_layers=2, num_heads=2, d_ff=16))
    tokens = torch.zeros(3, 4, dtype=torch.long)
    for model in (lm, seq):
        state = model.initial_state(3)
        with pytest.raises(TypeError, match=r"state: expected a ModelState\(position, layers\) with 2 layer states"):
            model(tokens, state=(state.position, state.layers[:1]))
        with pytest.raises(ValueError, match=r"state: expected position of shape \[B\] = \[3\], got \[2\]"):
            model(tokens, state=(state.position[:2], state.layers))
        _, carried = model(tokens, state=state)
        assert len(carried.layers) == 2 and carried.position.tolist() == [4, 4, 4]
