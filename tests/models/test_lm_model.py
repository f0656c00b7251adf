"""Language model (paper.md B.1, E.1, A.11, F.6): exact paper parameter counts, the tied adaptive softmax against an
explicit two-level factorisation, step == forward and carried state == one call for every registry layer,
resets, the paper's block and position handling, presets, init and input validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastweights.layers import available_layers
from fastweights.models import count_parameters
from fastweights.models.lm import (
    AdaptiveLogSoftmax,
    LanguageModel,
    LMConfig,
    build_lm,
    lm_layer_options,
    lm_positional_encoding,
    paper_config,
)

# paper.md A.11, LM small config, WT103 vocabulary 267,735
PAPER_COUNTS = [
    ("transformer", {}, 44_018_394),
    ("linear_transformer", {}, 44_018_394),
    ("delta_net", {}, 44_034_778),
    ("delta_mlp", {}, 48_770_266),
    ("delta_mlp", {"fast_net_depth": 2}, 54_046_426),
    ("delta_delta_net", {}, 44_575_450),
    ("delta_rnn", {}, 44_575_450),
    ("delta_rnn", {"version": 1}, 44_575_450),
    ("delta_lstm", {}, 47_262_426),
    ("delta_lstm", {"version": 1}, 47_262_426),
    ("rdn", {}, 44_135_130),
]


@pytest.mark.parametrize(("name", "opts", "expected"), PAPER_COUNTS)
def test_paper_parameter_counts(name, opts, expected):
    with torch.device("meta"):
        model = build_lm(paper_config(name, layer_options=opts))
    assert count_parameters(model) == expected
    # breakdown (paper.md A.11): embedding 267735 x 128, output biases + 3 cluster weights/biases, FF 526,720 per layer
    assert model.embedding.weight.numel() == 34_270_080
    assert model.output.bias.numel() + model.output.cluster_weight.numel() + model.output.cluster_bias.numel() \
        == 267_735 + 3 * 128 + 3
    block = model.blocks[0]
    assert count_parameters(block.ff) + count_parameters(block.norm2) == 526_720
    assert model.output.weight is model.embedding.weight  # tied, counted once


def test_paper_model_for_real():
    torch.manual_seed(0)
    model = build_lm(paper_config("delta_net")).eval()
    assert count_parameters(model) == 44_034_778
    emb = model.embedding.weight
    with torch.no_grad():
        assert abs(float(emb.std()) - 0.02) < 1e-3 and abs(float(emb.mean())) < 1e-3
    assert model.blocks[0].norm == "paper"
    assert model.output.cutoffs == (20_000, 40_000, 200_000)
    tokens = torch.tensor([[5, 25_000, 100_000, 267_734, 0, 19_999]])
    targets = torch.tensor([[25_000, 100_000, 267_734, 0, 19_999, 40_000]])
    with torch.no_grad():
        nll, state = model(tokens, targets=targets)
        logp, _ = model(tokens)
    assert nll.shape == (1, 6) and torch.isfinite(nll).all()
    assert logp.shape == (1, 6, 267_735)
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(1, 6), atol=1e-4, rtol=0)
    torch.testing.assert_close(nll, -logp.gather(-1, targets[..., None]).squeeze(-1), atol=1e-4, rtol=1e-5)
    # at init every head entry (20000 words + 3 clusters) and every word within a cluster is about equally likely
    head = math.log(20_003)
    expected = torch.tensor([[head + math.log(20_000), head + math.log(160_000), head + math.log(67_735), head,
                              head, head + math.log(160_000)]])
    torch.testing.assert_close(nll, expected, atol=1.0, rtol=0)
    assert state.position.tolist() == [6]


# ----------------------------------------------------------------------------------------------------------------
# adaptive softmax


def randomised(module: nn.Module, scale: float = 0.5) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return module


def explicit_log_probs(h, weight, bias, cluster_weight, cluster_bias, bounds):
    """Two-level factorisation written out: head over [shortlist | clusters], the tail softmax per cluster;
    cluster i (1-based) owns head column c0 + n - i (Transformer-XL order)."""
    c0, n = bounds[1], len(bounds) - 2
    head_logits = h @ torch.cat([weight[:c0], cluster_weight]).T + torch.cat([bias[:c0], cluster_bias])
    head = torch.log_softmax(head_logits, -1)
    out = torch.empty(*h.shape[:-1], bounds[-1], dtype=h.dtype)
    out[..., :c0] = head[..., :c0]
    for i in range(1, n + 1):
        lo, hi = bounds[i], bounds[i + 1]
        tail = torch.log_softmax(h @ weight[lo:hi].T + bias[lo:hi], -1)
        out[..., lo:hi] = head[..., c0 + n - i, None] + tail
    return out


def test_adaptive_softmax_equals_two_level_factorisation():
    torch.manual_seed(0)
    V, D, cutoffs = 37, 6, (8, 15, 30)
    emb = nn.Embedding(V, D).double()
    out = randomised(AdaptiveLogSoftmax(V, D, cutoffs, weight=emb.weight).double())
    assert out.weight is emb.weight
    h = torch.randn(4, 5, D, dtype=torch.float64)
    targets = torch.randint(0, V, (4, 5))
    targets[0, :4] = torch.tensor([3, 10, 20, 36])  # every cluster present
    expected = explicit_log_probs(h, emb.weight, out.bias, out.cluster_weight, out.cluster_bias, (0, *cutoffs, V))
    logp = out.log_prob(h)
    torch.testing.assert_close(logp, expected)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(4, 5, dtype=torch.float64))
    nll = out.nll(h, targets)
    torch.testing.assert_close(nll, -expected.gather(-1, targets[..., None]).squeeze(-1))
    # gradients reach the tied embedding rows of every cluster that holds a target
    nll.sum().backward()
    for w in (3, 10, 20, 36):
        assert emb.weight.grad[w].abs().sum() > 0


def test_full_softmax_is_tied_log_softmax():
    torch.manual_seed(0)
    emb = nn.Embedding(11, 4).double()
    out = randomised(AdaptiveLogSoftmax(11, 4, (), weight=emb.weight).double())
    assert out.cluster_weight is None
    h = torch.randn(3, 4, dtype=torch.float64)
    expected = torch.log_softmax(h @ emb.weight.T + out.bias, -1)
    torch.testing.assert_close(out.log_prob(h), expected)
    t = torch.tensor([0, 5, 10])
    torch.testing.assert_close(out.nll(h, t), -expected[torch.arange(3), t])
    with pytest.raises(ValueError, match=r"targets: expected shape \[3\]"):
        out.nll(h, t[:2])
    with pytest.raises(ValueError, match=r"targets: expected token ids in \[0, 11\), got values in \[0, 11\]"):
        out.nll(h, torch.tensor([0, 5, 11]))
    with pytest.raises(TypeError, match=r"targets: expected an integer torch\.Tensor"):
        out.nll(h, t.float())
    with pytest.raises(ValueError, match=r"cutoffs: expected increasing values in \(0, vocab_size = 11\)"):
        AdaptiveLogSoftmax(11, 4, (5, 11))


def test_softmax_choice_and_cutoffs():
    assert LMConfig("delta_net", 30, cutoffs=(10, 20, 40)).effective_cutoffs == (10, 20)  # auto drops 40
    assert LMConfig("delta_net", 10, cutoffs=(10, 20)).effective_cutoffs == ()  # auto: full softmax
    assert not LMConfig("delta_net", 100, softmax="full").adaptive
    assert LMConfig("delta_net", 100, softmax="adaptive", cutoffs=(50,)).adaptive
    with pytest.raises(ValueError, match="cutoffs: softmax='adaptive' needs every cutoff below vocab_size = 30"):
        LMConfig("delta_net", 30, softmax="adaptive", cutoffs=(10, 40))
    with pytest.raises(ValueError, match="cutoffs: expected strictly increasing"):
        LMConfig("delta_net", 30, cutoffs=(20, 10))
    with pytest.raises(ValueError, match="div_val: only div_val = 1"):
        LMConfig("delta_net", 30, div_val=4)
    untied = build_lm(LMConfig("delta_net", 30, d_model=8, num_layers=1, num_heads=2, d_ff=8, tie_weight=False,
                               cutoffs=(10,)))
    tied = build_lm(LMConfig("delta_net", 30, d_model=8, num_layers=1, num_heads=2, d_ff=8, cutoffs=(10,)))
    assert untied.output.weight is not untied.embedding.weight
    assert count_parameters(untied) == count_parameters(tied) + 30 * 8


# ----------------------------------------------------------------------------------------------------------------
# tiny models: every registry layer


def tiny(model: str, **kw) -> LMConfig:
    base = {"vocab_size": 30, "d_model": 8, "num_layers": 2, "num_heads": 2, "d_ff": 16, "dropout": 0.1,
            "softmax": "adaptive", "cutoffs": (10, 20), "position_order": "forward"}
    return LMConfig(model, **{**base, **kw})


def make(config: LMConfig) -> LanguageModel:
    torch.manual_seed(0)
    return randomised(build_lm(config).double().eval(), 0.4)


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


MODELS = available_layers()
VARIANTS = [tiny(name) for name in MODELS] + [
    tiny("delta_net", positional_encoding="none", block="post_ln"),
    tiny("transformer", block="pre_ln", softmax="full"),
    tiny("delta_rnn", layer_options={"version": 1}, clamp_len=3),
    tiny("delta_lstm", layer_options={"version": 1}, final_norm=True),
    tiny("delta_mlp", layer_options={"fast_net_depth": 2}),
]
IDS = [f"{c.model}-{c.block}-{c.positional_encoding}-{c.layer_options}" for c in VARIANTS]


@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes_nll_and_gradients(name):
    torch.manual_seed(0)
    model = build_lm(tiny(name)).train()
    tokens = torch.randint(0, 30, (2, 6))
    targets = torch.randint(0, 30, (2, 6))
    targets[0, :3] = torch.tensor([1, 15, 29])  # every cluster
    nll, state = model(tokens, targets=targets)
    assert nll.shape == (2, 6) and nll.dtype == torch.float32 and torch.isfinite(nll).all() and (nll > 0).all()
    nll.mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert state.position.tolist() == [6, 6] and len(state.layers) == 2
    model.eval()
    with torch.no_grad():
        logp, _ = model(tokens)
        nll_eval, _ = model(tokens, targets=targets)
    assert logp.shape == (2, 6, 30)
    torch.testing.assert_close(logp.logsumexp(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(nll_eval, -logp.gather(-1, targets[..., None]).squeeze(-1))


@pytest.mark.parametrize("config", VARIANTS, ids=IDS)
def test_step_decoding_equals_forward(config):
    model = make(config)
    tokens = torch.randint(0, 30, (2, 7))
    logp, final = model(tokens)
    assert logp.dtype == torch.float64
    out, state = model(tokens[:, :4])
    outs = [out]
    for t in range(4, 7):
        lp, state = model.step(tokens[:, t], state)
        assert lp.shape == (2, 30)
        outs.append(lp[:, None])
    torch.testing.assert_close(torch.cat(outs, dim=1), logp)
    assert_states_close(state, final)
    # decoding from the zero state token by token
    state = model.initial_state(2)
    steps = []
    for t in range(7):
        lp, state = model.step(tokens[:, t], state)
        steps.append(lp)
    torch.testing.assert_close(torch.stack(steps, dim=1), logp)


@pytest.mark.parametrize("config", VARIANTS, ids=IDS)
def test_carried_state_equals_one_call(config):
    model = make(config)
    tokens = torch.randint(0, 30, (2, 11))
    targets = torch.randint(0, 30, (2, 11))
    nll, final = model(tokens, targets=targets)
    a, s = model(tokens[:, :5], targets=targets[:, :5])
    b, s = model(tokens[:, 5:], s, targets=targets[:, 5:])
    torch.testing.assert_close(torch.cat([a, b], dim=1), nll)
    assert_states_close(s, final)
    assert final.position.tolist() == [11, 11]
    y0, _ = model(tokens, model.initial_state(2), targets=targets)
    torch.testing.assert_close(y0, nll)


@pytest.mark.parametrize("name", ["delta_net", "rdn", "delta_lstm", "transformer", "lstm"])
def test_reset_starts_a_new_stream(name):
    model = make(tiny(name))
    tokens = torch.randint(0, 30, (2, 9))
    reset = torch.zeros(2, 9, dtype=torch.bool)
    reset[1, 4] = True
    y, state = model(tokens, reset=reset)
    assert state.position.tolist() == [9, 5]
    whole, _ = model(tokens[:1])
    first, _ = model(tokens[1:, :4])
    second, final = model(tokens[1:, 4:])
    torch.testing.assert_close(y[:1], whole)
    torch.testing.assert_close(y[1:], torch.cat([first, second], dim=1))
    # the continuation from the reset row's state equals continuing the fresh stream
    nxt = torch.randint(0, 30, (2,))
    lp, _ = model.step(nxt, state)
    ref, _ = model.step(nxt[1:], final)
    torch.testing.assert_close(lp[1:], ref)


# ----------------------------------------------------------------------------------------------------------------
# paper block and positions


def zeroed(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
    return module


def test_paper_block_adds_the_residual_to_the_normalised_input():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    blocks = {}
    for kind in ("paper", "pre_ln", "post_ln"):
        cfg = LMConfig("feedforward", 10, d_model=8, num_layers=1, num_heads=2, d_ff=16, block=kind)
        blocks[kind] = build_lm(cfg).blocks[0].double().eval()
        assert blocks[kind].norm == kind
    for block in blocks.values():
        zeroed(block.layer)
        zeroed(block.ff)
        randomised(block.norm1)
        randomised(block.norm2)
    # with the layer and the FF contributing nothing, only the normalisations remain
    torch.testing.assert_close(blocks["paper"](x)[0], blocks["paper"].norm1(x))
    torch.testing.assert_close(blocks["pre_ln"](x)[0], x)
    torch.testing.assert_close(blocks["post_ln"](x)[0], blocks["post_ln"].norm2(blocks["post_ln"].norm1(x)))
    # full paper block written out (paper.md F.6)
    block = randomised(blocks["paper"])
    h = block.norm1(x)
    h = h + block.layer(h)[0]
    expected = h + block.ff.lin2(block.ff.lin1(block.norm2(h)).relu())
    torch.testing.assert_close(block(x)[0], expected)


def test_lm_positional_encoding_is_concatenated_sin_cos():
    pe = lm_positional_encoding(torch.tensor([0, 3, 7]), 6, torch.float64)
    for row, p in enumerate((0, 3, 7)):
        for j in range(3):
            w = 10000 ** (-2 * j / 6)
            assert math.isclose(pe[row, j], math.sin(p * w), abs_tol=1e-12)
            assert math.isclose(pe[row, 3 + j], math.cos(p * w), abs_tol=1e-12)


def embedding_only(**kw) -> LanguageModel:
    """A model whose blocks are identities (pre-LN with zero sublayers): hidden = emb * sqrt(D) + PE."""
    model = make(tiny("feedforward", block="pre_ln", **kw))
    for block in model.blocks:
        zeroed(block.layer)
        zeroed(block.ff)
    return model


def test_reversed_positions_follow_the_paper():
    model = embedding_only(position_order="reversed")
    tokens = torch.randint(0, 30, (2, 5))
    emb = model.embedding(tokens) * math.sqrt(8)
    h, state = model.hidden(tokens)
    torch.testing.assert_close(h, emb + lm_positional_encoding(torch.arange(4, -1, -1), 8, torch.float64))
    # the paper's code restarts the (reversed) positions at every call, also with a carried state
    h2, state = model.hidden(tokens[:, :3], state)
    torch.testing.assert_close(h2, emb[:, :3] + lm_positional_encoding(torch.tensor([2, 1, 0]), 8, torch.float64))
    assert state.position.tolist() == [8, 8]
    # clamping
    clamped = embedding_only(position_order="reversed", clamp_len=2)
    h, _ = clamped.hidden(tokens)
    torch.testing.assert_close(h, emb + lm_positional_encoding(torch.tensor([2, 2, 2, 1, 0]), 8, torch.float64))
    with pytest.raises(ValueError, match="step: positions are reversed within each call"):
        model.step(tokens[:, 0], state)


def test_forward_positions_continue_from_the_state():
    model = embedding_only(position_order="forward", clamp_len=6)
    tokens = torch.randint(0, 30, (2, 5))
    emb = model.embedding(tokens) * math.sqrt(8)
    _, state = model.hidden(tokens)
    h, state = model.hidden(tokens[:, :3], state)
    torch.testing.assert_close(h, emb[:, :3] + lm_positional_encoding(torch.tensor([5, 6, 6]), 8, torch.float64))
    assert state.position.tolist() == [8, 8]
    none = embedding_only(positional_encoding="none")
    torch.testing.assert_close(none.hidden(tokens)[0], none.embedding(tokens) * math.sqrt(8))


# ----------------------------------------------------------------------------------------------------------------
# presets, options, init


def test_presets():
    cfg = paper_config("delta_net")
    assert (cfg.vocab_size, cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff) == \
        (267_735, 16, 128, 8, 16, 2048)
    assert (cfg.dropout, cfg.dropatt, cfg.block, cfg.positional_encoding, cfg.position_order) == \
        (0.1, 0.0, "paper", "sinusoidal", "reversed")
    assert cfg.effective_cutoffs == (20_000, 40_000, 200_000) and cfg.tie_weight and cfg.init_std == 0.02
    assert not cfg.final_norm
    assert paper_config("transformer").block == "post_ln"
    full = paper_config("rdn", full_context=True)
    assert (full.block, full.positional_encoding) == ("post_ln", "none")
    assert paper_config("delta_mlp", layer_options={"fast_net_depth": 2}).layer_options == {"fast_net_depth": 2}
    with pytest.raises(ValueError, match="block: expected one of"):
        paper_config("delta_net", block="sandwich")


def test_lm_layer_options():
    def opts(name, **layer_options):
        return lm_layer_options(LMConfig(name, 10, dropatt=0.2, layer_options=layer_options))

    assert opts("linear_transformer") == {"feature_map": "elu1", "output_scale": True}
    assert opts("delta_net") == {"output_scale": True} and opts("rdn") == {"output_scale": True}
    assert opts("delta_rnn") == {"output_scale": True}
    assert opts("delta_rnn", version=1) == {"output_scale": False, "version": 1}
    assert opts("delta_lstm", version=3)["output_scale"] and not opts("delta_lstm", version=1)["output_scale"]
    assert opts("delta_mlp") == {} and opts("delta_delta_net") == {}
    assert opts("transformer") == {"bias": False, "attn_dropout": 0.2}
    assert opts("delta_net", output_scale=False) == {"output_scale": False}  # user options win
    model = build_lm(LMConfig("delta_rnn", 10, d_model=8, num_layers=1, num_heads=2, d_ff=8,
                              layer_options={"version": 1}))
    layer = model.blocks[0].layer
    assert layer.version == 1 and not layer.output_scale and layer.feature_map.name == "softmax"


@torch.no_grad()
def test_paper_init():
    torch.manual_seed(0)
    model = build_lm(LMConfig("rdn", 300, d_model=64, num_layers=2, num_heads=4, d_ff=256, cutoffs=(100, 200)))
    block = model.blocks[0]
    assert abs(float(block.ff.lin1.weight.std()) - 0.02) < 2e-3
    assert float(block.ff.lin1.bias.abs().max()) == 0.0 and float(block.norm1.bias.abs().max()) == 0.0
    gain = block.norm1.weight
    assert abs(float(gain.mean()) - 1.0) < 0.01 and 0.005 < float(gain.std()) < 0.05
    assert abs(float(block.layer.slow_net.weight.std()) - 0.02) < 2e-3
    assert abs(float(block.layer.rec_q.std()) - 1 / 4) < 0.05  # RDN keeps N(0, 1/sqrt(d))
    assert float(model.output.bias.abs().max()) == 0.0 and float(model.output.cluster_bias.abs().max()) == 0.0
    assert abs(float(model.output.cluster_weight.std()) - 0.02) < 0.015
    default = build_lm(LMConfig("delta_net", 300, d_model=64, num_layers=1, num_heads=4, d_ff=256, init_std=None))
    assert float(default.blocks[0].norm1.weight.std()) == 0.0  # PyTorch's LayerNorm init kept


# ----------------------------------------------------------------------------------------------------------------
# validation


def test_input_validation():
    model = build_lm(tiny("delta_net"))
    tokens = torch.randint(0, 30, (2, 4))
    with pytest.raises(ValueError, match=r"tokens: expected token ids in \[0, 30\), got values in \[0, 30\]"):
        model(torch.tensor([[0, 30]]))
    with pytest.raises(ValueError, match=r"tokens: expected token ids in \[0, 30\), got values in \[-1, 2\]"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(TypeError, match="tokens: expected an integer tensor"):
        model(tokens.float())
    with pytest.raises(ValueError, match=r"tokens: expected a 2-d tensor \[B, T\]"):
        model(tokens[0])
    with pytest.raises(ValueError, match="tokens: expected at least one time step"):
        model(tokens[:, :0])
    with pytest.raises(ValueError, match=r"targets: expected token ids in \[0, 30\), got values in \[0, 31\]"):
        model(tokens, targets=torch.tensor([[0, 1, 2, 31], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"targets: expected the shape of tokens \[B, T\] = \[2, 4\]"):
        model(tokens, targets=tokens[:, :3])
    with pytest.raises(TypeError, match="targets: expected an integer tensor"):
        model(tokens, targets=tokens.double())
    with pytest.raises(ValueError, match=r"tokens_t: expected a 1-d tensor \[B\]"):
        model.step(tokens, None)
    with pytest.raises(TypeError, match=r"reset: expected dtype torch\.bool"):
        model(tokens, reset=torch.zeros(2, 4))
    with pytest.raises(TypeError, match="state: expected a ModelState"):
        model(tokens, state=(torch.zeros(2, dtype=torch.long), ()))
    with pytest.raises(ValueError, match=r"state: expected position of shape \[B\] = \[2\]"):
        model(tokens, state=model.initial_state(3))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"model": "gru"}, ValueError, "model: unknown model 'gru'"),
    ({"vocab_size": 0}, ValueError, "vocab_size: expected a positive int"),
    ({"dropout": 1.0}, ValueError, r"dropout: expected a probability in \[0, 1\)"),
    ({"block": "sandwich"}, ValueError, "block: expected one of"),
    ({"softmax": "sampled"}, ValueError, "softmax: expected one of"),
    ({"positional_encoding": "rope"}, ValueError, "positional_encoding: expected one of"),
    ({"position_order": "random"}, ValueError, "position_order: expected one of"),
    ({"clamp_len": 0}, ValueError, "clamp_len: expected a positive int"),
    ({"d_model": 9, "num_heads": 3}, ValueError, "d_model: the \\[sin | cos\\] positional encoding needs an even"),
    ({"d_model": 10, "num_heads": 3}, ValueError, "head_dim: d_model = 10 is not divisible by num_heads = 3"),
    ({"init_std": 0.0}, ValueError, "init_std: expected None or a finite float > 0"),
    ({"tie_weight": 1}, ValueError, "tie_weight: expected a bool"),
    ({"layer_options": [("version", 1)]}, ValueError, "layer_options: expected a dict"),
])
def test_config_validation(kwargs, error, match):
    base = {"model": "delta_net", "vocab_size": 30, "d_model": 8, "num_heads": 2}
    with pytest.raises(error, match=match):
        LMConfig(**{**base, **kwargs})


def test_unknown_layer_option_names_the_layer():
    with pytest.raises(TypeError, match=r"options: layer 'delta_net' got unexpected option\(s\) \['version'\]"):
        build_lm(tiny("delta_net", layer_options={"version": 2}))
    with pytest.raises(TypeError, match="config: expected an LMConfig"):
        build_lm({"model": "delta_net"})


def test_blocks_share_parameter_names():
    """``paper`` and ``pre_ln`` blocks have the same submodules: a checkpoint loads into either."""
    paper = build_lm(tiny("delta_net", block="paper"))
    pre = build_lm(tiny("delta_net", block="pre_ln"))
    pre.load_state_dict(paper.state_dict())
