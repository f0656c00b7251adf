"""Sequence models: exact parameter counts (paper.md A.11), step == forward, state carry-over, resets, the
ListOps head, equivalence of the transformer baseline with PyTorch's encoder, and input validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastweights.layers import available_layers, build_layer
from fastweights.models import (
    LSTMModel,
    ModelConfig,
    ModelState,
    ResidualBlock,
    SequenceModel,
    build_model,
    count_parameters,
    sinusoidal_encoding,
)

ALGORITHMIC = {  # code execution, 3 variables: input vocab 22, 25 classes
    "linear_transformer": 3_167_001, "delta_net": 3_183_385, "delta_rnn": 3_724_057, "rdn": 3_233_561,
    "transformer": 3_171_609,
}
LISTOPS = {  # input vocab 14, 10 classes
    "linear_transformer": 3_161_098, "delta_net": 3_177_482, "delta_rnn": 3_718_154, "rdn": 3_227_658,
    "transformer": 3_165_706,
}


@pytest.mark.parametrize("name", list(ALGORITHMIC))
def test_algorithmic_parameter_counts(name):
    config = ModelConfig(name, vocab_size=22, num_classes=25)  # defaults: 4 layers, D 256, 16 heads, FF 1024
    assert count_parameters(build_model(config)) == ALGORITHMIC[name]
    listops = ModelConfig(name, vocab_size=14, num_classes=10, head="last")
    assert count_parameters(build_model(listops)) == LISTOPS[name]


RL_CORES = [  # D=128, H=4, d=32, 2 layers, FF 512, input projection 257 -> 128 with bias (paper.md A.11, B.3)
    ("delta_net", {"sum_norm_eps": 1e-5}, 429_568),
    ("rdn", {}, 454_400),
    ("delta_rnn", {"feature_map": "softmax"}, 496_128),
    ("linear_transformer", {"feature_map": "elu1_sum_norm", "sum_norm_eps": 1e-5}, 428_544),
]


@pytest.mark.parametrize(("name", "opts", "expected"), RL_CORES)
def test_rl_core_parameter_counts(name, opts, expected):
    core = nn.ModuleList([nn.Linear(257, 128)] + [ResidualBlock(build_layer(name, 128, 4, **opts), 512)
                                                  for _ in range(2)])
    assert count_parameters(core) == expected
    x = torch.randn(3, 2, 257)
    h, state = core[0](x), None
    for block in core[1:]:
        h, state = block(h, state)
    assert h.shape == (3, 2, 128)


def tiny(name: str, **kw) -> ModelConfig:
    base = {"vocab_size": 7, "num_classes": 5, "d_model": 8, "num_layers": 2, "num_heads": 2, "d_ff": 16,
            "dropout": 0.1, "emb_size": 6, "lstm_hidden": 10}
    return ModelConfig(name, **{**base, **kw})


def make(config: ModelConfig):
    torch.manual_seed(0)
    return build_model(config).double().eval()


def leaves(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for s in state for t in leaves(s)]


def assert_states_close(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if x.is_floating_point():
            torch.testing.assert_close(x, y)
        else:
            assert torch.equal(x, y)


CONFIGS = [tiny(name) for name in available_layers()] + [
    tiny("delta_net", positional_encoding="sinusoidal"),
    tiny("transformer", positional_encoding="none"),
    tiny("delta_lstm", layer_options={"version": 2}),
]
IDS = [f"{c.model}-pe={c.use_positional_encoding}-{c.layer_options}" for c in CONFIGS]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_forward_equals_prefix_then_steps(config):
    model = make(config)
    tokens = torch.randint(0, 7, (2, 13))
    logits, final = model(tokens)
    assert logits.shape == (2, 13, 5) and logits.dtype == torch.float64
    out, state = model(tokens[:, :10])
    outs = [out]
    for t in range(10, 13):
        lt, state = model.step(tokens[:, t], state)
        outs.append(lt[:, None])
    torch.testing.assert_close(torch.cat(outs, dim=1), logits)
    assert_states_close(state, final)
    assert torch.equal(final.position, torch.full((2,), 13))


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_carried_state_and_resets(config):
    model = make(config)
    tokens = torch.randint(0, 7, (2, 12))
    logits, final = model(tokens)
    a, s = model(tokens[:, :5])
    b, s = model(tokens[:, 5:], s)
    torch.testing.assert_close(torch.cat([a, b], dim=1), logits)
    assert_states_close(s, final)
    # a reset at k == two independent runs (positions restart too)
    reset = torch.zeros(2, 12, dtype=torch.bool)
    reset[:, 4] = True
    y, final_r = model(tokens, reset=reset)
    first, _ = model(tokens[:, :4])
    second, final_2 = model(tokens[:, 4:])
    torch.testing.assert_close(y, torch.cat([first, second], dim=1))
    assert_states_close(final_r, final_2)
    # initial_state == None
    y0, _ = model(tokens, model.initial_state(2))
    torch.testing.assert_close(y0, logits)


def test_positions_restart_per_row():
    model = make(tiny("transformer"))
    tokens = torch.randint(0, 7, (2, 6))
    reset = torch.zeros(2, 6, dtype=torch.bool)
    reset[1, 3] = True
    _, state = model(tokens, reset=reset)
    assert state.position.tolist() == [6, 3]


def test_last_token_head_uses_lengths():
    per_position = make(tiny("delta_net"))
    last = make(tiny("delta_net", head="last"))
    last.load_state_dict(per_position.state_dict())
    tokens = torch.randint(0, 7, (3, 9))
    lengths = torch.tensor([9, 4, 1])
    full, _ = per_position(tokens)
    out, _ = last(tokens, lengths=lengths)
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, full[torch.arange(3), lengths - 1])
    torch.testing.assert_close(last(tokens)[0], full[:, -1])
    with pytest.raises(ValueError, match=r"lengths: expected values in \[1, T = 9\]"):
        last(tokens, lengths=torch.tensor([9, 0, 1]))
    with pytest.raises(ValueError, match=r"lengths: expected shape \[B\]"):
        last(tokens, lengths=torch.tensor([9, 1]))


@pytest.mark.parametrize("num_layers", [1, 2])
def test_transformer_equals_pytorch_encoder(num_layers):
    """The `transformer` model is the algorithmic PyTorch Transformer (post-LN, biases, final LN, PE)."""
    config = tiny("transformer", num_layers=num_layers)
    model = make(config)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(8), enable_nested_tensor=False)
    encoder = encoder.double().eval()
    with torch.no_grad():
        for ours, ref in zip(model.blocks, encoder.layers, strict=True):
            ref.self_attn.in_proj_weight.copy_(ours.layer.qkv_proj.weight)
            ref.self_attn.in_proj_bias.copy_(ours.layer.qkv_proj.bias)
            ref.self_attn.out_proj.weight.copy_(ours.layer.out_proj.weight)
            ref.self_attn.out_proj.bias.copy_(ours.layer.out_proj.bias)
            for a, b in ((ours.ff.lin1, ref.linear1), (ours.ff.lin2, ref.linear2), (ours.norm1, ref.norm1),
                         (ours.norm2, ref.norm2)):
                a.weight.normal_()
                a.bias.normal_()
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
        encoder.norm.weight.copy_(model.final_norm.weight)
        encoder.norm.bias.copy_(model.final_norm.bias)
    tokens = torch.randint(0, 7, (2, 10))
    x = model.embedding(tokens) + sinusoidal_encoding(torch.arange(10), 8, torch.float64)
    mask = nn.Transformer.generate_square_subsequent_mask(10, dtype=torch.float64)
    expected = model.head(encoder(x, mask=mask, is_causal=True))
    torch.testing.assert_close(model(tokens)[0], expected)
    assert count_parameters(model) == count_parameters(encoder) + count_parameters(model.embedding) + \
        count_parameters(model.head)


def test_sinusoidal_encoding_is_the_standard_interleaved_one():
    pe = sinusoidal_encoding(torch.arange(5), 6, torch.float64)
    for p in range(5):
        for i in range(3):
            angle = p / 10000 ** (2 * i / 6)
            assert math.isclose(pe[p, 2 * i], math.sin(angle), abs_tol=1e-12)
            assert math.isclose(pe[p, 2 * i + 1], math.cos(angle), abs_tol=1e-12)


def test_architecture_choices():
    fast = build_model(tiny("delta_net"))
    assert isinstance(fast, SequenceModel) and fast.final_norm is None and not fast.config.use_positional_encoding
    trafo = build_model(tiny("transformer"))
    assert trafo.final_norm is not None and trafo.config.use_positional_encoding
    assert trafo.blocks[0].layer.bias and trafo.blocks[0].layer.attn_dropout == 0.1
    lstm = build_model(tiny("lstm", num_layers=3))
    assert isinstance(lstm, LSTMModel) and lstm.lstm.num_layers == 3
    assert lstm.embedding.embedding_dim == 6 and lstm.lstm.hidden_size == 10 and lstm.head.in_features == 10
    assert isinstance(lstm.initial_state(4), ModelState)
    dm = build_model(tiny("delta_mlp", layer_options={"fast_net_depth": 2}))
    assert dm.blocks[0].layer.fast_net_depth == 2


@pytest.mark.parametrize("name", ["delta_net", "rdn", "transformer", "lstm"])
def test_gradient_reaches_every_parameter(name):
    torch.manual_seed(1)
    model = build_model(tiny(name, dropout=0.0))
    logits, _ = model(torch.randint(0, 7, (2, 5)))
    logits.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_bad_inputs_and_configs():
    model = build_model(tiny("delta_net"))
    with pytest.raises(TypeError, match=r"tokens: expected an integer tensor \[B, T\].*torch.float32"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"tokens: expected a 2-d tensor \[B, T\]"):
        model(torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens: expected token ids in \[0, 7\)"):
        model(torch.full((2, 3), 7))
    with pytest.raises(ValueError, match=r"tokens_t: expected a 1-d tensor \[B\]"):
        model.step(torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(TypeError, match=r"reset: expected dtype torch.bool, got torch.float32"):
        model(torch.zeros(2, 3, dtype=torch.long), reset=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"model: unknown model 'deltanet'.*delta_net"):
        tiny("deltanet")
    with pytest.raises(ValueError, match=r"head: expected one of \['per_position', 'last'\]"):
        tiny("delta_net", head="first")
    with pytest.raises(ValueError, match="dropout"):
        tiny("delta_net", dropout=1.5)
    with pytest.raises(ValueError, match="d_model"):
        tiny("delta_net", d_model=0)
    with pytest.raises(TypeError, match=r"feature_mapp"):
        build_model(tiny("delta_net", layer_options={"feature_mapp": "elu1"}))
    with pytest.raises(ValueError, match="feature_map: expected one of"):
        build_model(tiny("delta_net", layer_options={"feature_map": "relu"}))
    with pytest.raises(TypeError, match="layer_options"):
        build_model(tiny("lstm", layer_options={"bias": True}))
    with pytest.raises(TypeError, match="config: expected a ModelConfig"):
        build_model({"model": "delta_net"})
