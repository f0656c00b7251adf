"""Bad arguments raise ``TypeError``/``ValueError`` naming the argument, the expected and the actual value."""

from __future__ import annotations

import math

import pytest
import torch
from _ops_helpers import (
    ALL_CASES,
    CHUNK_KWARG_CASES,
    DD,
    LSTM,
    MLP2,
    REC,
    RECURRENT_CASES,
    RNN2,
    call,
    case_params,
    interval_kw,
    make_inputs,
)

from fastweights import ops

B, T, H, K, V = 2, 5, 2, 3, 4


def _inputs(case):
    return make_inputs(case, B=B, T=T, H=H, K=K, V=K if case.square else V)


def shape_str(shape) -> str:
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def raises(exc, fn, *fragments: str) -> str:
    """``fn()`` raises ``exc`` whose message contains every fragment; returns the message."""
    with pytest.raises(exc) as info:
        fn()
    msg = str(info.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in the error message {msg!r}"
    return msg


def _ids(case, pred=lambda n: True):
    names = _inputs(case)[0]
    return [pytest.param(case, i, id=f"{case.id}-{n}") for i, n in enumerate(names) if pred(n)]


ALL_INPUTS = [p for c in ALL_CASES for p in _ids(c)]
OTHER_INPUTS = [p for c in ALL_CASES for p in _ids(c) if p.values[1] > 0]
PER_STEP_OTHER_INPUTS = [p for c in ALL_CASES for p in _ids(c, lambda n: not n.startswith("rec_")) if p.values[1] > 0]
PROBABILITY_INPUTS = [p for c in ALL_CASES if c.op != "rec_delta"
                      for p in _ids(c, lambda n: n in ("beta", "rbeta") or n.startswith("betas["))]
STATE_COMPONENTS = [pytest.param(c, j, id=f"{c.id}-{n}") for c in ALL_CASES for j, n in enumerate(_inputs(c)[2])]
TUPLE_STATE_CASES = [c for c in ALL_CASES if not c.single_state]

# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_wrong_rank_of_first_input(case):
    names, xs, _, st = _inputs(case)
    bad = xs[0].flatten(-2)
    xs[0] = bad
    raises(ValueError, lambda: call(case, xs, st), f"{names[0]}:", shape_str(bad.shape))


@pytest.mark.parametrize("axis", [0, 1, 2], ids=["B", "T", "H"])
@pytest.mark.parametrize(("case", "i"), PER_STEP_OTHER_INPUTS)
def test_mismatched_leading_dims(case, i, axis):
    """B, T or H of any per-step input differs from the first input's."""
    names, xs, _, st = _inputs(case)
    good = xs[i]
    xs[i] = torch.cat([good, good.narrow(axis, 0, 1)], dim=axis)  # keeps values valid (betas in [0, 1])
    expected_lead = shape_str(good.shape[:3])[:-1]  # "[2, 5, 2" (prefix of the expected shape)
    raises(ValueError, lambda: call(case, xs, st), f"{names[i]}:", shape_str(xs[i].shape), expected_lead)


def test_rec_delta_needs_a_square_state():
    _, xs, _, _ = _inputs(REC)
    xs[2] = torch.randn(B, T, H, K + 1, dtype=torch.float64)
    raises(ValueError, lambda: call(REC, xs, None), "v:", "K == V", str(K), str(K + 1))


@pytest.mark.parametrize("name", ["rec_q", "rec_k", "rec_v", "rec_beta"])
def test_rec_delta_recurrent_matrix_shape(name):
    names, xs, _, st = _inputs(REC)
    i = names.index(name)
    good = xs[i]
    xs[i] = torch.randn(*good.shape[:-1], K + 1, dtype=torch.float64)
    raises(ValueError, lambda: call(REC, xs, st), f"{name}:", shape_str(good.shape), shape_str(xs[i].shape))


def test_rec_delta_recurrent_matrix_per_batch_is_rejected():
    _, xs, _, st = _inputs(REC)
    xs[4] = xs[4].expand(B, H, K, K)  # [B, H, D, D] instead of [H, D, D]
    raises(ValueError, lambda: call(REC, xs, st), "rec_q:", shape_str((H, K, K)), shape_str((B, H, K, K)))


def test_delta_delta_value_size():
    _, xs, _, _ = _inputs(DD)
    xs[2] = xs[2][..., :-1]
    raises(ValueError, lambda: call(DD, xs, None), "v:", "3D+1", str(3 * K + 1), str(3 * K))


@pytest.mark.parametrize("version", [1, 4])
def test_delta_lstm_gate_axis(version):
    case = LSTM[version]
    _, xs, _, _ = _inputs(case)
    xs = [x[..., :2, :] if x.dim() == 5 else x[..., :2] for x in xs]  # two gates instead of three
    raises(ValueError, lambda: call(case, xs, None), "q:", "3")


@pytest.mark.parametrize("name", ["rk", "rv"])
@pytest.mark.parametrize("case", case_params([RNN2, LSTM[4]]))
def test_recurrent_key_value_size_must_be_V(case, name):
    names, xs, _, st = _inputs(case)
    i = names.index(name)
    good = xs[i]
    xs[i] = torch.cat([good, good[..., :1]], dim=-1)
    raises(ValueError, lambda: call(case, xs, st), f"{name}:", shape_str(good.shape), shape_str(xs[i].shape))


# ----------------------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(("case", "i"), ALL_INPUTS)
def test_integer_input(case, i):
    names, xs, _, st = _inputs(case)
    xs[i] = xs[i].round().long()
    raises(TypeError, lambda: call(case, xs, st), f"{names[i]}:", "torch.int64")


@pytest.mark.parametrize(("case", "i"), ALL_INPUTS)
def test_non_tensor_input(case, i):
    names, xs, _, st = _inputs(case)
    xs[i] = xs[i].tolist()
    raises(TypeError, lambda: call(case, xs, st), f"{names[i]}:", "list")


@pytest.mark.parametrize(("case", "i"), [p for p in OTHER_INPUTS if not p.id.startswith("rec_delta-rec_")])
def test_mixed_dtypes(case, i):
    """An input whose dtype differs from the first input's (rec_delta's slow matrices are exempt)."""
    names, xs, _, st = _inputs(case)
    xs[i] = xs[i].float()
    raises(TypeError, lambda: call(case, xs, st), f"{names[i]}:", "torch.float32", "torch.float64")


def test_delta_mlp_first_input_dtype_differs_from_keys():
    _, xs, _, st = _inputs(MLP2)
    xs[0] = xs[0].float()
    msg = raises(TypeError, lambda: call(MLP2, xs, st), "torch.float32", "torch.float64")
    assert "h" in msg.split(":")[0] or "keys[0]" in msg.split(":")[0], msg


def test_rec_delta_allows_float32_slow_matrices_with_float64_inputs():
    _, xs, _, st = _inputs(REC)
    xs[4:] = [p.float() for p in xs[4:]]
    out, _ = call(REC, xs, st)
    assert out.dtype == torch.float64


# ----------------------------------------------------------------------------------------------- reset


@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_reset_wrong_dtype(case):
    _, xs, _, st = _inputs(case)
    raises(TypeError, lambda: call(case, xs, st, torch.zeros(B, T)), "reset:", "torch.bool", "torch.float32")
    raises(TypeError, lambda: call(case, xs, st, torch.zeros(B, T, dtype=torch.long)), "reset:", "torch.int64")
    raises(TypeError, lambda: call(case, xs, st, [[False] * T] * B), "reset:", "list")


@pytest.mark.parametrize("bad", [(B, T + 1), (B + 1, T), (T,), (B, T, 1)], ids=str)
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_reset_wrong_shape(case, bad):
    _, xs, _, st = _inputs(case)
    raises(ValueError, lambda: call(case, xs, st, torch.zeros(bad, dtype=torch.bool)),
           "reset:", shape_str((B, T)), shape_str(bad))


# ------------------------------------------------------------------------------------------ initial state


@pytest.mark.parametrize(("case", "j"), STATE_COMPONENTS)
def test_initial_state_component_wrong_shape(case, j):
    _, xs, st_names, st = _inputs(case)
    good = st[j]
    st[j] = torch.cat([good, good[..., :1]], dim=-1)
    raises(ValueError, lambda: call(case, xs, st), f"{st_names[j]}:", shape_str(good.shape), shape_str(st[j].shape))


@pytest.mark.parametrize(("case", "j"), STATE_COMPONENTS)
def test_initial_state_component_integer(case, j):
    _, xs, st_names, st = _inputs(case)
    st[j] = st[j].long()
    raises(TypeError, lambda: call(case, xs, st), f"{st_names[j]}:", "torch.int64")


@pytest.mark.parametrize("case", case_params(TUPLE_STATE_CASES))
def test_initial_state_wrong_number_of_components(case):
    _, xs, _, st = _inputs(case)
    n = len(st)
    raises(ValueError, lambda: call(case, xs, st[:-1]), "initial_state:", str(n), str(n - 1))
    raises(ValueError, lambda: call(case, xs, [*st, st[-1]]), "initial_state:", str(n), str(n + 1))


@pytest.mark.parametrize("case", case_params(TUPLE_STATE_CASES))
def test_initial_state_bare_tensor_for_a_tuple_state(case):
    _, xs, _, st = _inputs(case)
    raises(TypeError, lambda: call(case, xs, st[0]), "initial_state:", "Tensor")


@pytest.mark.parametrize("op", ["sum_rule", "delta_rule"])
def test_initial_state_tuple_for_a_single_matrix_state(op):
    case = next(c for c in ALL_CASES if c.op == op)
    _, xs, _, st = _inputs(case)
    raises(TypeError, lambda: case.fn(*xs, initial_state=(st[0],)), "initial_state:", "tuple")


# ----------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan], ids=["above", "below", "nan"])
@pytest.mark.parametrize(("case", "i"), PROBABILITY_INPUTS)
def test_probability_outside_unit_interval(case, i, value):
    names, xs, _, st = _inputs(case)
    xs[i] = xs[i].clone()
    xs[i].view(-1)[3] = value
    raises(ValueError, lambda: call(case, xs, st), f"{names[i]}:", "[0, 1]")


def test_value_checks_can_be_switched_off():
    case = RNN2
    _, xs, _, st = _inputs(case)
    xs[3] = xs[3] + 1.0  # beta in [1, 2]
    try:
        ops.set_value_checks(False)
        out, _ = call(case, xs, st)
        assert torch.isfinite(out).all()
        ops.set_value_checks(True)
        raises(ValueError, lambda: call(case, xs, st), "beta:")
    finally:
        ops.set_value_checks(None)
    raises(ValueError, lambda: call(case, xs, st), "beta:")


def test_rec_delta_takes_raw_beta():
    """rec_delta applies the sigmoid itself: beta outside [0, 1] is valid."""
    _, xs, _, st = _inputs(REC)
    xs[3] = 5.0 * xs[3] + 3.0
    assert xs[3].max() > 1 and xs[3].min() < 0
    out, _ = call(REC, xs, st)
    assert torch.isfinite(out).all()


# ------------------------------------------------------------------------------------ options, devices


@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_unknown_impl(case):
    _, xs, _, st = _inputs(case)
    raises(ValueError, lambda: call(case, xs, st, impl="nope"), "impl:", "'nope'", "reference")


@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_auto_impl_is_the_default(case):
    _, xs, _, st = _inputs(case)
    assert torch.equal(call(case, xs, st, impl="auto")[0], call(case, xs, st)[0])


@pytest.mark.parametrize("version", [0, 3, True, "2", None])
def test_delta_rnn_wrong_version(version):
    _, xs, _, _ = _inputs(RNN2)
    raises(ValueError, lambda: ops.delta_rnn(*xs, version=version), "version:", "[1, 2]", repr(version))


@pytest.mark.parametrize("version", [0, 5, True])
def test_delta_lstm_wrong_version(version):
    _, xs, _, _ = _inputs(LSTM[4])
    raises(ValueError, lambda: ops.delta_lstm(*xs, version=version), "version:", "[1, 2, 3, 4]", repr(version))


@pytest.mark.parametrize("impl", [None, "reference"])
@pytest.mark.parametrize("op", ["delta_rnn", "delta_lstm"])
def test_version_is_checked_by_every_implementation(op, impl):
    case = RNN2 if op == "delta_rnn" else LSTM[4]
    _, xs, _, _ = _inputs(case)
    raises(ValueError, lambda: case.fn(*xs, version=7, impl=impl), "version:", "7")


@pytest.mark.parametrize("chunk_size", [0, -1, 2.5, True, "8"], ids=repr)
@pytest.mark.parametrize("case", case_params(CHUNK_KWARG_CASES))
def test_invalid_chunk_size(case, chunk_size):
    """chunk_size (the chunked rules) and checkpoint_every (the checkpointed scans) must be positive ints."""
    _, xs, _, st = _inputs(case)
    (name,) = interval_kw(case, chunk_size)
    raises(ValueError, lambda: call(case, xs, st, **interval_kw(case, chunk_size)), f"{name}:", repr(chunk_size))


@pytest.mark.parametrize("impl", [None, "reference"])
@pytest.mark.parametrize("case", case_params(RECURRENT_CASES))
def test_an_option_a_recurrent_op_does_not_take_is_refused(case, impl):
    """chunk_size (the parallel chunk width of the sum and delta rules) or a mistyped option: refused, naming the
    option the recurrent ops take, checkpoint_every."""
    _, xs, _, st = _inputs(case)
    raises(TypeError, lambda: call(case, xs, st, impl=impl, chunk_size=8), "chunk_size:", "its options: "
           "checkpoint_every")
    raises(TypeError, lambda: call(case, xs, st, impl=impl, checkpoint_evry=8), "checkpoint_evry:")


def test_delta_mlp_list_arguments():
    _, xs, _, _ = _inputs(MLP2)
    h, keys, values, betas = xs[0], xs[1:5], xs[5:9], xs[9:]
    raises(ValueError, lambda: ops.delta_mlp(h, keys[:3], values[:3], betas[:3]), "keys:", "3")
    raises(ValueError, lambda: ops.delta_mlp(h, keys, values[:2], betas), "values")
    raises(ValueError, lambda: ops.delta_mlp(h, [], [], []), "keys:")
    raises(ValueError, lambda: ops.delta_mlp(h, keys, values, betas, norms=[lambda x: x]), "norms:", "2", "1")


def _meta_or_skip(t):
    try:
        return t.to("meta")
    except Exception as e:  # pragma: no cover
        pytest.skip(f"no meta device: {e}")


@pytest.mark.parametrize(("case", "i"), OTHER_INPUTS)
def test_input_on_another_device(case, i):
    """CPU-only machines: a tensor on the 'meta' device stands in for one on another device."""
    names, xs, _, st = _inputs(case)
    xs[i] = _meta_or_skip(xs[i])
    raises(ValueError, lambda: call(case, xs, st), f"{names[i]}:", "meta", "cpu")


@pytest.mark.parametrize(("case", "j"), STATE_COMPONENTS)
def test_initial_state_on_another_device(case, j):
    _, xs, st_names, st = _inputs(case)
    st[j] = _meta_or_skip(st[j])
    raises(ValueError, lambda: call(case, xs, st), f"{st_names[j]}:", "meta", "cpu")


@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_reset_on_another_device(case):
    _, xs, _, st = _inputs(case)
    reset = _meta_or_skip(torch.zeros(B, T, dtype=torch.bool))
    raises(ValueError, lambda: call(case, xs, st, reset), "reset:", "meta", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_input_on_cuda_while_first_is_on_cpu(case):  # pragma: no cover - GPU machines only
    names, xs, _, st = _inputs(case)
    xs[1] = xs[1].cuda()
    raises(ValueError, lambda: call(case, xs, st), f"{names[1]}:", "cuda", "cpu")


@pytest.mark.parametrize("impl", [None, "reference"])
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_empty_sequence(case, impl):
    """T = 0 must either work (empty output, final state == initial state) or be rejected with a ValueError
    that names the time axis; not crash inside the implementation (ZeroDivisionError, torch.stack([]))."""
    _, xs, st_names, st = make_inputs(case, B=B, T=0, H=H, K=K, V=K if case.square else V)
    try:
        out, fin = call(case, xs, st, impl=impl)
    except ValueError as e:
        assert "T" in str(e), str(e)
        return
    assert out.shape[1] == 0
    for name, a, e in zip(st_names, fin, st):
        assert torch.equal(a, e), name


# ------------------------------------------------------------------------------------- activated arguments


def test_value_check_is_skipped_inside_activated_arguments_only():
    from fastweights.ops.common.checks import activated_arguments

    q = torch.rand(1, 3, 1, 2)
    bad_beta = torch.full((1, 3, 1), 2.0)
    with pytest.raises(ValueError, match=r"beta: expected values in \[0, 1\]"):
        ops.delta_rule(q, q, q, bad_beta)
    with activated_arguments():
        ops.delta_rule(q, q, q, bad_beta)  # a layer's sigmoid output: not read again
        with pytest.raises(ValueError, match="beta: expected shape"):  # shape checks still run
            ops.delta_rule(q, q, q, bad_beta[:, :2])
    with pytest.raises(ValueError, match=r"beta: expected values in \[0, 1\]"):
        ops.delta_rule(q, q, q, bad_beta)


@pytest.mark.parametrize("name", ["delta_net", "delta_rnn", "delta_mlp", "delta_delta_net", "delta_lstm"])
def test_layers_do_not_run_value_checks(name, monkeypatch):
    from fastweights.layers import build_layer
    from fastweights.ops.common import checks

    decisions = []
    original = checks._value_checks_for

    def spy(t):
        decisions.append(original(t))
        return decisions[-1]

    monkeypatch.setattr(checks, "_value_checks_for", spy)
    layer = build_layer(name, 16, 2, 8)
    layer(torch.randn(2, 5, 16))[0].sum().backward()
    assert decisions and not any(decisions)  # asked, and told to skip, at every check
    decisions.clear()
    ops.delta_rule(*(torch.rand(1, 3, 1, 2),) * 3, torch.rand(1, 3, 1))
    assert decisions == [True]  # a direct call still checks
