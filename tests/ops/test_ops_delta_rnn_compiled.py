"""The compiled (numba) Delta RNN against the float64 reference, for both versions.

Equivalence covers outputs, every final-state component and the gradients of every input and initial-state
component, over sequence lengths around the default chunk size, resets at t = 0 / at chunk boundaries / at
the last step, and several chunk sizes; the checkpointed implementation runs through the same checks.
"""

from __future__ import annotations

import functools

import pytest
import torch

pytest.importorskip("numba")

from _ops_helpers import (
    RNN1,
    RNN2,
    assert_rel_close,
    call,
    compare_runs,
    make_inputs,
    make_reset,
    run_with_grads,
)

from fastweights import ops
from fastweights.ops.common.registry import resolve
from fastweights.ops.delta_rnn import compiled as drc

CASES = {1: RNN1, 2: RNN2}
B, H, K, V = 3, 2, 3, 4


def _reset(T: int) -> torch.Tensor:
    """Row 0: t = 0 and mid-sequence; row 1: chunk boundaries (of chunk sizes 3 and the default 16) and the last
    step; row 2: none (so every initial-state gradient is non-zero)."""
    at = [(0, 0), (0, T // 2)] + [(1, t) for t in (3, 6, 16, 48, 63, 64, T - 1) if t > 0]
    return make_reset(B, T, at)


def _inputs(version: int, T: int, seed: int = 0):
    return make_inputs(CASES[version], B=B, T=T, H=H, K=K, V=V, seed=seed)


@functools.cache
def _reference(version: int, T: int):
    _, xs, _, st = _inputs(version, T)
    return run_with_grads(CASES[version], xs, st, _reset(T), impl="reference")


@pytest.mark.parametrize("impl", ["compiled", "checkpointed"])
@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 100])
@pytest.mark.parametrize("version", [1, 2])
def test_matches_reference_float64(version, T, impl):
    case = CASES[version]
    names, xs, st_names, st = _inputs(version, T)
    ref = _reference(version, T)
    for checkpoint_every in sorted({1, 3, T, T + 5}):
        got = run_with_grads(case, xs, st, _reset(T), impl=impl, checkpoint_every=checkpoint_every)
        compare_runs(case, got, ref, 1e-9, names, st_names)
    if impl == "compiled":  # the default chunk size (16 here) and no reset at all
        compare_runs(case, run_with_grads(case, xs, st, _reset(T), impl=impl), ref, 1e-9, names, st_names)
        compare_runs(case, run_with_grads(case, xs, st, None, impl=impl),
                     run_with_grads(case, xs, st, None, impl="reference"), 1e-9, names, st_names)


@pytest.mark.parametrize("version", [1, 2])
def test_gradcheck(version):
    case = CASES[version]
    _, xs, _, st = make_inputs(case, B=2, T=5, H=1, K=2, V=3, seed=17)
    reset = make_reset(2, 5, [(0, 2), (1, 3)])  # on a chunk boundary (checkpoint_every=2) and inside a chunk
    leaves = tuple(x.clone().requires_grad_() for x in [*xs, *st])
    n = len(xs)

    def fn(*ts):
        out, fin = call(case, list(ts[:n]), list(ts[n:]), reset, impl="compiled", checkpoint_every=2)
        return (out, *fin)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("version", [1, 2])
def test_float32_close_to_float64_reference(version):
    case, T = CASES[version], 257
    names, xs, st_names, st = make_inputs(case, B=2, T=T, H=2, K=3, V=4, seed=5)
    reset = make_reset(2, T, [(0, 100), (1, 17)])
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    got = run_with_grads(case, [x.float() for x in xs], [s.float() for s in st], reset, impl="compiled")
    assert got[0].dtype == torch.float32 and all(f.dtype == torch.float32 for f in got[1])
    compare_runs(case, got, ref, 1e-4, names, st_names)


@pytest.mark.parametrize("version", [1, 2])
def test_bfloat16_runs_and_returns_bfloat16(version):
    case = CASES[version]
    _, xs, _, st = make_inputs(case, B=2, T=9, H=2, K=3, V=4, dtype=torch.bfloat16, seed=3)
    leaves = [x.clone().requires_grad_() for x in xs]
    out, fin = call(case, leaves, st, make_reset(2, 9, [(1, 4)]), impl="compiled", checkpoint_every=4)
    assert out.dtype == torch.bfloat16 and all(f.dtype == torch.float32 for f in fin)
    out.float().sum().backward()
    assert all(x.grad is not None and x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
               for x in leaves)
    ref, _ = call(case, [x.float() for x in xs], st, make_reset(2, 9, [(1, 4)]), impl="reference")
    assert_rel_close(out.float(), ref, 2e-2, "bf16 output")


@pytest.mark.parametrize("version", [1, 2])
def test_reset_equals_two_independent_runs(version):
    case, T, k = CASES[version], 11, 6
    _, xs, _, st = make_inputs(case, B=2, T=T, H=2, K=3, V=4, seed=9)
    reset = make_reset(2, T, [(0, k), (1, k)])
    out, fin = call(case, xs, st, reset, impl="compiled", checkpoint_every=4)
    out_a, _ = call(case, [x[:, :k] for x in xs], st, None, impl="compiled", checkpoint_every=4)
    out_b, fin_b = call(case, [x[:, k:] for x in xs], None, None, impl="compiled", checkpoint_every=4)
    torch.testing.assert_close(out, torch.cat([out_a, out_b], dim=1), rtol=1e-12, atol=1e-12)
    for a, e in zip(fin, fin_b):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("version", [1, 2])
def test_inputs_not_mutated(version):
    case = CASES[version]
    _, xs, _, st = make_inputs(case, B=2, T=7, H=2, K=3, V=4, seed=4)
    before = [t.clone() for t in [*xs, *st]]
    run_with_grads(case, xs, st, make_reset(2, 7, [(0, 0), (1, 3)]), impl="compiled", checkpoint_every=3)
    for a, e in zip([*xs, *st], before):
        assert torch.equal(a, e)


def test_auto_selects_compiled_on_cpu():
    assert ops.available_implementations()["delta_rnn"][0] == "compiled"
    _, xs, _, st = make_inputs(RNN2, B=2, T=5, H=2, K=3, V=4)
    assert resolve("delta_rnn", None, xs[0]).fn is drc.delta_rnn_compiled
    out, fin = call(RNN2, xs, st, impl=None)
    out_c, fin_c = call(RNN2, xs, st, impl="compiled")
    assert torch.equal(out, out_c) and all(torch.equal(a, e) for a, e in zip(fin, fin_c))


def test_no_grad_and_no_final_state():
    _, xs, _, _ = make_inputs(RNN1, B=2, T=5, H=2, K=3, V=4)
    with torch.no_grad():
        out, fin = ops.delta_rnn(*xs, version=1, impl="compiled")
    ref, _ = ops.delta_rnn(*xs, version=1, impl="reference")
    assert fin is None
    assert_rel_close(out, ref, 1e-12, "output")


@pytest.mark.parametrize("checkpoint_every", [0, -2, 1.5, True])
def test_checkpoint_every_errors_match_checkpointed(checkpoint_every):
    _, xs, _, _ = make_inputs(RNN2, B=1, T=3, H=1, K=2, V=2)
    messages = []
    for impl in ("checkpointed", "compiled"):
        with pytest.raises(ValueError, match="checkpoint_every") as err:
            ops.delta_rnn(*xs, impl=impl, checkpoint_every=checkpoint_every)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(("H_", "V_"), [(1, 1), (3, 17), (2, 8)])
def test_odd_sizes_match_reference(version, H_, V_):
    """Value sizes below, at and off the vector width, an odd head count, a chunk size that does not divide T."""
    case, T = CASES[version], 23
    names, xs, st_names, st = make_inputs(case, B=2, T=T, H=H_, K=3, V=V_, seed=11)
    reset = make_reset(2, T, [(0, 5), (1, 16), (1, T - 1)])
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    got = run_with_grads(case, xs, st, reset, impl="compiled", checkpoint_every=5)
    if V_ > 1:
        compare_runs(case, got, ref, 1e-9, names, st_names)
    else:  # softmax over one value is constant: some gradients are exactly zero, which compare_runs refuses
        flat = [got[0], *got[1], *got[2], *got[3]]
        for a, e in zip(flat, [ref[0], *ref[1], *ref[2], *ref[3]]):
            torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-12)


def _strided(x: torch.Tensor) -> torch.Tensor:
    """The same values as a non-contiguous view: a slice of a wider tensor with the time and head axes swapped."""
    t = x.transpose(1, 2)
    wide = torch.full((*t.shape[:-1], t.shape[-1] + 3), float("nan"), dtype=x.dtype)
    wide[..., : t.shape[-1]] = t
    view = wide[..., : t.shape[-1]].transpose(1, 2)
    assert not view.is_contiguous() and torch.equal(view, x)
    return view


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("version", [1, 2])
def test_non_contiguous_inputs_give_identical_results(version, dtype):
    case, T = CASES[version], 13
    _, xs, _, st = make_inputs(case, B=2, T=T, H=3, K=3, V=5, dtype=dtype, seed=21)
    reset = make_reset(2, T, [(0, 4), (1, 9)])
    got = run_with_grads(case, xs, st, reset, impl="compiled", checkpoint_every=4)
    views = run_with_grads(case, [_strided(x) for x in xs], [s.transpose(-1, -2).contiguous().transpose(-1, -2)
                                                              for s in st], reset, impl="compiled", checkpoint_every=4)
    for a, e in zip([got[0], *got[1], *got[2], *got[3]], [views[0], *views[1], *views[2], *views[3]]):
        assert a.dtype == e.dtype and torch.equal(a, e)
