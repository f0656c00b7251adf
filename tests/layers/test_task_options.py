"""The task presets of the layers (paper.md A.10): one table per layer class, read by ``task_options``."""

from __future__ import annotations

import re

import pytest

from fastweights.layers import LAYERS, MODEL_KINDS, build_layer, layer_options, task_options

# the paper's settings, written out once more: the tables must keep saying this
PAPER_PRESETS = {
    "lm": {
        "linear_transformer": {"feature_map": "elu1", "output_scale": True},
        "delta_net": {"output_scale": True},
        "rdn": {"output_scale": True},
        "delta_rnn": {"output_scale": True},
        "delta_lstm": {"output_scale": True},
        "transformer": {"bias": False},
    },
    "rl": {
        "delta_net": {"sum_norm_eps": 1e-5},
        "linear_transformer": {"feature_map": "elu1_sum_norm", "sum_norm_eps": 1e-5},
        "delta_rnn": {"feature_map": "softmax"},
        "delta_lstm": {"sum_norm_eps": 1e-5},
    },
    "algorithmic": {"transformer": {"bias": True, "mha_init": True}},
}


@pytest.mark.parametrize("task", MODEL_KINDS)
@pytest.mark.parametrize("name", list(LAYERS))
def test_presets_are_the_papers(name, task):
    assert task_options(name, task) == PAPER_PRESETS[task].get(name, {})
    build_layer(name, 8, 2, **task_options(name, task))  # every preset is a valid set of options


def test_version_entries_and_user_options():
    assert task_options("delta_rnn", "lm", {"version": 1}) == {"output_scale": False, "version": 1}
    assert task_options("delta_rnn", "lm", {"version": 2}) == {"output_scale": True, "version": 2}
    assert task_options("delta_lstm", "lm", {"version": 1}) == {"output_scale": False, "version": 1}
    for version in (2, 3, 4):
        assert task_options("delta_lstm", "lm", {"version": version})["output_scale"]
    assert task_options("delta_rnn", "rl", {"version": 1}) == {"feature_map": "softmax", "version": 1}
    assert task_options("delta_net", "lm", {"output_scale": False}) == {"output_scale": False}  # the user wins
    assert task_options("delta_net", "rl", {"feature_map": "dpfp"}) == {"sum_norm_eps": 1e-5, "feature_map": "dpfp"}


def test_table_keys_name_tasks_and_options():
    for name, cls in LAYERS.items():
        for key, preset in cls.TASK_OPTIONS.items():
            task, _, version = key.partition(" ")
            assert task in MODEL_KINDS, (name, key)
            assert not version or (re.fullmatch(r"v\d+", version) and "version" in layer_options(name)), (name, key)
            assert set(preset) <= set(layer_options(name)), (name, key)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"task: expected one of \['algorithmic', 'lm', 'rl'\], got 'nlp'"):
        task_options("delta_net", "nlp")
    with pytest.raises(ValueError, match=r"name: unknown layer 'deltanet'"):
        task_options("deltanet", "lm")


def test_the_algorithmic_transformer_is_initialised_as_nn_multihead_attention():
    """PyTorch's encoder layer (the paper's algorithmic baseline): a xavier-uniform input projection (one draw over
    the stacked q, k, v blocks) and zero biases; the output weight keeps nn.Linear's init."""
    import math

    import torch

    torch.manual_seed(0)
    layer = build_layer("transformer", 64, 4, **task_options("transformer", "algorithmic"))
    w = layer.qkv_proj.weight  # [3 * 64, 64]
    bound = math.sqrt(6 / (64 + 3 * 64))
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert not layer.qkv_proj.bias.any() and not layer.out_proj.bias.any()
    assert layer.out_proj.weight.abs().max() <= 1 / math.sqrt(64)  # nn.Linear's kaiming-uniform bound
    default = build_layer("transformer", 64, 4, bias=True)
    assert default.qkv_proj.bias.abs().sum() > 0  # without the option: nn.Linear's init
    with pytest.raises(ValueError, match="mha_init"):
        build_layer("transformer", 64, 4, mha_init="yes")
