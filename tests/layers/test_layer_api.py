"""Registry, option validation, input validation and parameter counts of the layers."""

from __future__ import annotations

import pytest
import torch
from layer_variants import D_MODEL, HEADS, VARIANTS

from fastweights.layers import (
    LAYERS,
    DeltaLSTM,
    DeltaMLP,
    DeltaNet,
    DeltaRNN,
    FeatureMap,
    LinearTransformer,
    SequenceLayer,
    available_layers,
    build_layer,
    layer_options,
)

EXPECTED_NAMES = ["linear_transformer", "delta_net", "delta_mlp", "delta_delta_net", "delta_rnn", "delta_lstm", "rdn",
                  "transformer", "lstm", "feedforward"]


def test_registry_covers_every_name():
    assert sorted(available_layers()) == sorted(EXPECTED_NAMES)
    assert set(LAYERS) == set(EXPECTED_NAMES)
    assert {name for name, _ in VARIANTS} == set(EXPECTED_NAMES)  # every layer goes through the state tests
    for name in EXPECTED_NAMES:
        layer = build_layer(name, D_MODEL, HEADS)
        assert isinstance(layer, LAYERS[name]) and isinstance(layer, SequenceLayer)
        assert layer.d_model == D_MODEL


def test_unknown_layer_name_lists_the_names():
    with pytest.raises(ValueError, match=r"name: unknown layer 'delta_netz'.*delta_net.*rdn"):
        build_layer("delta_netz", D_MODEL, HEADS)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match=r"feature_mapp.*accepts.*feature_map"):
        build_layer("delta_net", D_MODEL, HEADS, feature_mapp="elu1")
    with pytest.raises(TypeError, match="version"):
        build_layer("delta_net", D_MODEL, HEADS, version=2)
    assert "fast_net_depth" in layer_options("delta_mlp")


@pytest.mark.parametrize(("cls", "opts", "arg"), [
    (DeltaNet, {"feature_map": "relu"}, "feature_map"),
    (LinearTransformer, {"feature_map": None}, "feature_map"),
    (DeltaRNN, {"feature_map": "dpfp"}, "feature_map"),
    (DeltaRNN, {"version": 3}, "version"),
    (DeltaRNN, {"version": True}, "version"),
    (DeltaLSTM, {"version": 0}, "version"),
    (DeltaMLP, {"fast_net_depth": 0}, "fast_net_depth"),
    (DeltaMLP, {"fast_ff_dim": -1}, "fast_ff_dim"),
    (DeltaNet, {"sum_norm_eps": -1.0}, "sum_norm_eps"),
    (DeltaNet, {"output_scale": 1}, "output_scale"),
    (DeltaNet, {"feature_map": "dpfp", "dpfp_nu": 0}, "dpfp_nu"),
    (DeltaNet, {"feature_map": "favor", "favor_features": 0}, "favor_features"),
])
def test_bad_option_values_are_named(cls, opts, arg):
    with pytest.raises(ValueError, match=rf"^{arg}: expected"):
        cls(D_MODEL, HEADS, **opts)


def test_bad_sizes():
    with pytest.raises(ValueError, match="head_dim: d_model = 10 is not divisible by num_heads = 4"):
        DeltaNet(10, 4)
    with pytest.raises(ValueError, match="num_heads"):
        DeltaNet(8, 0)
    with pytest.raises(ValueError, match="d_model"):
        build_layer("lstm", 0, 1)
    layer = DeltaNet(10, 4, head_dim=3)  # explicit head_dim: H * d != d_model is allowed
    assert layer(torch.randn(1, 3, 10))[0].shape == (1, 3, 10)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_bad_input_is_named(name):
    layer = build_layer(name, D_MODEL, HEADS)
    with pytest.raises(ValueError, match=r"x: expected a 3-d tensor \[B, T, C\].*got a 2-d tensor of shape \[2, 8\]"):
        layer(torch.randn(2, D_MODEL))
    with pytest.raises(ValueError, match=r"x: expected last dim C = d_model = 8.*got shape \[2, 3, 5\]"):
        layer(torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match=r"x: expected a floating-point tensor.*torch.int64"):
        layer(torch.ones(2, 3, D_MODEL, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor"):
        layer([[0.0] * D_MODEL])
    with pytest.raises(ValueError, match=r"x_t: expected a 2-d tensor \[B, C\]"):
        layer.step(torch.randn(2, 1, D_MODEL), None)
    with pytest.raises(TypeError, match=r"reset: expected dtype torch\.bool"):
        layer(torch.randn(2, 3, D_MODEL), reset=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"reset: expected shape \[B, T\] = \[2, 3\]"):
        layer(torch.randn(2, 3, D_MODEL), reset=torch.zeros(2, 4, dtype=torch.bool))


def test_feature_map_dims_and_favor_redraw():
    assert FeatureMap("dpfp", 4, dpfp_nu=3).out_dim == 24
    fmap = FeatureMap("favor", 4, favor_features=5)
    assert fmap.out_dim == 10 and fmap.projection.shape == (4, 5)
    layer = DeltaNet(D_MODEL, HEADS, feature_map="favor", favor_features=5)
    assert layer.initial_state(3).shape == (3, HEADS, 10, D_MODEL // HEADS)
    before = layer.feature_map.projection.clone()
    layer.eval()(torch.randn(1, 2, D_MODEL))
    assert torch.equal(layer.feature_map.projection, before)  # fixed in eval mode
    layer.train()(torch.randn(1, 2, D_MODEL))
    assert not torch.equal(layer.feature_map.projection, before)  # redrawn per training forward
    assert sum(p.numel() for p in layer.parameters()) == DeltaNet(D_MODEL, HEADS).slow_net.weight.numel() + 64


# Per-layer parameter counts of the LM small config (D=128, H=8, d=16), including the block's one
# LayerNorm(128) = 256 parameters (paper.md A.11).
LM_COUNTS = [
    ("linear_transformer", {}, 65_792),
    ("delta_net", {}, 66_816),
    ("delta_mlp", {"fast_net_depth": 1}, 362_784),
    ("delta_mlp", {"fast_net_depth": 2}, 692_544),
    ("delta_delta_net", {}, 100_608),
    ("delta_rnn", {}, 100_608),
    ("delta_rnn", {"version": 1}, 100_608),
    ("delta_lstm", {}, 268_544),
    ("delta_lstm", {"version": 1}, 268_544),
    ("rdn", {}, 73_088),
    ("transformer", {"bias": False}, 65_792),
]


@pytest.mark.parametrize(("name", "opts", "expected"), LM_COUNTS)
def test_lm_parameter_counts(name, opts, expected):
    layer = build_layer(name, 128, 8, **opts)
    assert sum(p.numel() for p in layer.parameters()) + 2 * 128 == expected


def test_favor_redraw_keeps_earlier_graphs_valid():
    layer = DeltaNet(D_MODEL, HEADS, feature_map="favor", favor_features=3).train()
    y1, s = layer(torch.randn(1, 3, D_MODEL))
    y2, _ = layer.step(torch.randn(1, D_MODEL), s)  # redraws while y1's graph is alive
    (y1.sum() + y2.sum()).backward()
    assert "feature_map.projection" in dict(layer.named_buffers())
