"""Layer variants shared by the layer tests: ``(registry name, options)`` with tiny sizes."""

from __future__ import annotations

D_MODEL, HEADS = 8, 2

VARIANTS = [
    ("linear_transformer", {}),
    ("linear_transformer", {"feature_map": "elu1_sum_norm", "sum_norm_eps": 1e-5}),
    ("linear_transformer", {"feature_map": "dpfp", "sum_norm_eps": 1e-5}),
    ("linear_transformer", {"feature_map": "favor", "favor_features": 3}),
    ("delta_net", {}),
    ("delta_net", {"feature_map": "softmax", "output_scale": True}),
    ("delta_net", {"feature_map": "dpfp", "dpfp_nu": 3, "sum_norm_eps": 1e-5}),
    ("delta_net", {"feature_map": "favor", "favor_features": 5}),
    ("delta_mlp", {}),
    ("delta_mlp", {"fast_net_depth": 2, "fast_ff_dim": 6}),
    ("delta_delta_net", {}),
    ("delta_rnn", {}),
    ("delta_rnn", {"version": 1}),
    ("delta_rnn", {"feature_map": "softmax", "output_scale": True}),
    ("delta_lstm", {"version": 1}),
    ("delta_lstm", {"version": 2}),
    ("delta_lstm", {"version": 3}),
    ("delta_lstm", {"version": 4, "output_scale": True}),
    ("rdn", {}),
    ("transformer", {}),
    ("transformer", {"bias": True}),
    ("lstm", {}),
    ("lstm", {"hidden_size": 6}),
    ("feedforward", {}),
]


def variant_id(v: tuple[str, dict]) -> str:
    name, opts = v
    return name + "".join(f"-{k}={val}" for k, val in opts.items())
