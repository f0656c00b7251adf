"""The compiled (numba) sum and delta rules against the float64 reference.

Equivalence covers outputs, final states and the gradients of every input and of the initial state, over sequence
lengths around the checkpoint interval, resets at t = 0 / at checkpoint boundaries / at the last step, several
checkpoint intervals, K != V and odd sizes; then float32 against float64, half precision, purity, selection.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("numba")

from _ops_helpers import (
    DELTA,
    SUM,
    assert_rel_close,
    call,
    compare_runs,
    make_inputs,
    make_reset,
    run_with_grads,
)

from fastweights import ops
from fastweights.ops.common import compiled_linear
from fastweights.ops.common.registry import resolve

CASES = {"sum_rule": SUM, "delta_rule": DELTA}
B, H, K, V = 3, 2, 3, 5


def _reset(T: int) -> torch.Tensor:
    """Row 0: t = 0 and mid-sequence; row 1: checkpoint boundaries (of intervals 3 and the default 16) and the
    last step; row 2: none (so every initial-state gradient is non-zero)."""
    at = [(0, 0), (0, T // 2)] + [(1, t) for t in (3, 6, 16, 48, 63, 64, T - 1) if t > 0]
    return make_reset(B, T, at)


@pytest.mark.parametrize("T", [1, 2, 15, 16, 17, 64, 100])
@pytest.mark.parametrize("op", ["sum_rule", "delta_rule"])
def test_matches_reference_float64(op, T):
    case = CASES[op]
    names, xs, st_names, st = make_inputs(case, B=B, T=T, H=H, K=K, V=V, seed=T)
    ref = run_with_grads(case, xs, st, _reset(T), impl="reference")
    for checkpoint_every in sorted({1, 3, T, T + 5}):
        got = run_with_grads(case, xs, st, _reset(T), impl="compiled", checkpoint_every=checkpoint_every)
        compare_runs(case, got, ref, 1e-10, names, st_names)
    compare_runs(case, run_with_grads(case, xs, st, _reset(T), impl="compiled"), ref, 1e-10, names, st_names)
    no_reset = run_with_grads(case, xs, None, None, impl="reference")
    compare_runs(case, run_with_grads(case, xs, None, None, impl="compiled"), no_reset, 1e-10, names, st_names)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 7, 2), (1, 3, 16, 16), (2, 2, 33, 17)])
@pytest.mark.parametrize("op", ["sum_rule", "delta_rule"])
def test_odd_sizes(op, shape):
    Bs, Hs, Ks, Vs = shape
    case, T = CASES[op], 23
    names, xs, st_names, st = make_inputs(case, B=Bs, T=T, H=Hs, K=Ks, V=Vs, seed=Ks)
    reset = make_reset(Bs, T, [(0, 5), (Bs - 1, 22)])
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    compare_runs(case, run_with_grads(case, xs, st, reset, impl="compiled", checkpoint_every=4), ref, 1e-10, names,
                 st_names)


@pytest.mark.parametrize("op", ["sum_rule", "delta_rule"])
def test_gradcheck(op):
    case = CASES[op]
    _, xs, _, st = make_inputs(case, B=2, T=5, H=1, K=2, V=3, seed=17)
    reset = make_reset(2, 5, [(0, 2), (1, 3)])  # on a checkpoint boundary (checkpoint_every=2) and inside one
    leaves = tuple(x.clone().requires_grad_() for x in [*xs, *st])
    n = len(xs)

    def fn(*ts):
        out, fin = call(case, list(ts[:n]), list(ts[n:]), reset, impl="compiled", checkpoint_every=2)
        return (out, *fin)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("op", ["sum_rule", "delta_rule"])
def test_float32_close_to_float64_reference(op):
    case, T = CASES[op], 257
    names, xs, st_names, st = make_inputs(case, B=2, T=T, H=2, K=16, V=16, seed=5)
    reset = make_reset(2, T, [(0, 100), (1, 17)])
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    got = run_with_grads(case, [x.float() for x in xs], [s.float() for s in st], reset, impl="compiled")
    assert got[0].dtype == torch.float32 and all(f.dtype == torch.float32 for f in got[1])
    compare_runs(case, got, ref, 1e-5, names, st_names)


@pytest.mark.parametrize("op", ["sum_rule", "delta_rule"])
def test_bfloat16_runs_and_returns_bfloat16(op):
    case = CASES[op]
    _, xs, _, st = make_inputs(case, B=2, T=9, H=2, K=3, V=4, dtype=torch.bfloat16, seed=3)
    leaves = [x.clone().requires_grad_() for x in xs]
    reset = make_reset(2, 9, [(1, 4)])
    out, fin = call(case, leaves, st, reset, impl="compiled", checkpoint_every=4)
    assert out.dtype == torch.bfloat16 and all(f.dtype == torch.float32 for f in fin)
    out.float().sum().backward()
    assert all(x.grad is not None and x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
               for x in leaves)
    ref, _ = call(case, [x.float() for x in xs], st, reset, impl="reference")
    assert_rel_close(out.float(), ref, 2e-2, "bf16 output")


@pytest.mark.parametrize("op", ["sum_rule", "delta_rule"])
def test_gradient_of_the_final_state_only(op):
    """A loss on the final state alone (no output gradient) and on the output alone (no state gradient)."""
    case = CASES[op]
    _, xs, _, st = make_inputs(case, B=2, T=12, H=2, K=3, V=4, seed=8)
    for pick in (lambda out, fin: fin[0].sum(), lambda out, fin: out.sum()):
        grads = []
        for impl in ("reference", "compiled"):
            leaves = [x.clone().requires_grad_() for x in [*xs, *st]]
            kw = {"checkpoint_every": 5} if impl == "compiled" else {}
            out, fin = call(case, leaves[:len(xs)], leaves[len(xs):], None, impl=impl, **kw)
            got = torch.autograd.grad(pick(out, fin), leaves, allow_unused=True)  # q does not reach the state
            grads.append([torch.zeros_like(x) if g is None else g for g, x in zip(got, leaves)])
        for a, e in zip(*reversed(grads)):
            assert_rel_close(a, e, 1e-10, "gradient")


@pytest.mark.parametrize("op", ["sum_rule", "delta_rule"])
def test_inputs_not_mutated_and_strided_inputs(op):
    case = CASES[op]
    _, xs, _, st = make_inputs(case, B=2, T=7, H=2, K=3, V=4, seed=4)
    before = [t.clone() for t in [*xs, *st]]
    got = run_with_grads(case, xs, st, make_reset(2, 7, [(0, 0), (1, 3)]), impl="compiled", checkpoint_every=3)
    for a, e in zip([*xs, *st], before):
        assert torch.equal(a, e)
    # the layers pass views of one projection: non-contiguous inputs give the same result
    wide = [torch.cat([x, x], dim=-1)[..., : x.shape[-1]] for x in xs]
    assert not wide[0].is_contiguous()
    again = run_with_grads(case, wide, st, make_reset(2, 7, [(0, 0), (1, 3)]), impl="compiled", checkpoint_every=3)
    for a, e in zip([again[0], *again[1], *again[2], *again[3]], [got[0], *got[1], *got[2], *got[3]]):
        assert torch.equal(a, e)


def test_auto_selects_compiled_for_small_heads_and_chunked_for_large():
    for op in ("sum_rule", "delta_rule"):
        assert ops.available_implementations()[op][0] == "compiled"
    small = torch.rand(1, 4, 1, 16)
    big = torch.rand(1, 4, 1, 256)
    for op, args in (("delta_rule", (torch.rand(1, 4, 1),)), ("sum_rule", ())):
        assert small.shape[-1] ** 2 <= compiled_linear.MAX_HEAD[op] < big.shape[-1] ** 2
        assert resolve(op, None, small, small, small, *args).name == "compiled"
        assert resolve(op, None, big, big, big, *args).name == "chunked"
        # an explicit chunk width asks for the chunked form, a checkpoint interval for the recurrent one
        assert resolve(op, None, small, small, small, *args, chunk_size=16).name == "chunked"
        assert resolve(op, None, big, big, big, *args, checkpoint_every=16).name == "compiled"
    # the limit is on K x V: a narrow key with wide values counts as its product
    wide_v = torch.rand(1, 4, 1, 200)
    assert resolve("sum_rule", None, small, small, wide_v).name == "compiled"
    assert resolve("sum_rule", None, big, big, wide_v).name == "chunked"


def test_no_grad_keeps_no_checkpoints_and_matches():
    _, xs, _, st = make_inputs(DELTA, B=2, T=9, H=2, K=3, V=4)
    with torch.no_grad():
        out, fin = ops.delta_rule(*xs, initial_state=st[0], output_final_state=True, impl="compiled")
        _, _, scp, w = compiled_linear._recurrence(True, False, 4, torch.ones(2, 9, dtype=torch.float64), *xs,
                                                   st[0])
    ref, ref_fin = ops.delta_rule(*xs, initial_state=st[0], output_final_state=True, impl="reference")
    assert scp.numel() == 0 and w.numel() == 0
    assert_rel_close(out, ref, 1e-12, "output")
    assert_rel_close(fin, ref_fin, 1e-12, "final state")


@pytest.mark.parametrize("checkpoint_every", [0, -2, 1.5, True])
def test_checkpoint_every_is_validated(checkpoint_every):
    _, xs, _, _ = make_inputs(DELTA, B=1, T=3, H=1, K=2, V=2)
    with pytest.raises(ValueError, match="checkpoint_every: expected a positive int"):
        ops.delta_rule(*xs, impl="compiled", checkpoint_every=checkpoint_every)
