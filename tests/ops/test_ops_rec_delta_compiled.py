"""The compiled (numba) implementation of ``rec_delta`` against the float64 reference step loop.

``rec_delta`` has a single version, so every test covers all of its versions. The equivalence sweep runs for
``impl="compiled"`` and, in the same parametrization, for ``impl="checkpointed"`` (the pure-PyTorch path), so
both non-reference paths stay covered. Timings are not asserted here (docs/performance.md has them).
"""

from __future__ import annotations

import functools

import pytest
import torch
from _ops_helpers import (
    F64,
    REC,
    assert_rel_close,
    call,
    compare_runs,
    loss_weights,
    make_inputs,
    make_reset,
    run_with_grads,
    standard_reset,
)

pytest.importorskip("numba")

from fastweights import ops
from fastweights.ops.common.registry import available_implementations, resolve
from fastweights.ops.rec_delta import compiled as rdc

TOL = 1e-9
B, H, D = 2, 2, 3
CHUNKS = ("default", 1, 3, "T", "T+7")  # checkpoint_every: None, 1, 3, T and longer than T


def _chunk_kw(chunk, T: int) -> dict:
    size = {"default": None, "T": T, "T+7": T + 7}.get(chunk, chunk)
    return {} if size is None else {"checkpoint_every": size}


@functools.cache
def _case(T: int):
    """Inputs with a random initial state; resets at t = 0 and mid-sequence (batch 0), at chunk boundaries
    (3 and 63 for checkpoint_every 3, 16 and 64 for the default 16 and for 1) and at the last step (batch 1)."""
    names, xs, st_names, st = make_inputs(REC, B=B, T=T, H=H, K=D, seed=100 + T)
    reset = standard_reset(B, T, boundaries=(3, 16, 63, 64))
    ref = run_with_grads(REC, xs, st, reset, impl="reference")
    return names, xs, st_names, st, reset, ref


@pytest.mark.parametrize("impl", ["compiled", "checkpointed"])
@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 100])
def test_matches_reference(T, impl):
    """Outputs, final (W, y) and the gradients of every input and initial-state component, every chunk size."""
    names, xs, st_names, st, reset, ref = _case(T)
    for chunk in CHUNKS:
        got = run_with_grads(REC, xs, st, reset, impl=impl, **_chunk_kw(chunk, T))
        compare_runs(REC, got, ref, TOL, names, st_names)


@pytest.mark.parametrize("impl", ["compiled", "checkpointed"])
def test_matches_reference_zero_state_no_reset(impl):
    T = 40
    names, xs, st_names, _ = make_inputs(REC, B=B, T=T, H=H, K=D, seed=5)
    got = run_with_grads(REC, xs, None, None, impl=impl, checkpoint_every=16)
    ref = run_with_grads(REC, xs, None, None, impl="reference")
    compare_runs(REC, got, ref, TOL, names, st_names)


def test_gradcheck():
    _, xs, _, st = make_inputs(REC, B=2, T=5, H=2, K=3, seed=17)
    reset = make_reset(2, 5, [(0, 2), (1, 3)])  # batch 0 on a chunk boundary, batch 1 inside a chunk
    leaves = tuple(x.clone().requires_grad_() for x in [*xs, *st])

    def fn(*ts):
        out, fin = call(REC, list(ts[:8]), list(ts[8:]), reset, impl="compiled", checkpoint_every=2)
        return (out, *fin)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_float32_close_to_float64_reference():
    T = 257
    names, xs, st_names, st = make_inputs(REC, B=2, T=T, H=2, K=4, seed=3)
    reset = make_reset(2, T, [(0, 100), (1, 17)])
    got = run_with_grads(REC, [x.float() for x in xs], [s.float() for s in st], reset, impl="compiled")
    assert got[0].dtype == torch.float32 and all(f.dtype == torch.float32 for f in got[1])
    assert all(g.dtype == torch.float32 for g in got[2] + got[3])
    ref = run_with_grads(REC, xs, st, reset, impl="reference")
    compare_runs(REC, got, ref, 1e-4, names, st_names)


def test_bfloat16_inputs_return_bfloat16():
    T = 24
    names, xs, st_names, st = make_inputs(REC, B=2, T=T, H=2, K=4, seed=4)
    half = [x.float() if n.startswith("rec_") else x.bfloat16() for n, x in zip(names, xs)]
    st32 = [s.float() for s in st]
    got = run_with_grads(REC, half, st32, None, impl="compiled")
    out, fin, gx, _ = got
    assert out.dtype == torch.bfloat16
    assert all(f.dtype == torch.float32 for f in fin)
    assert all(g.dtype == x.dtype for g, x in zip(gx, half))
    ref = run_with_grads(REC, [x.to(F64) for x in half], [s.to(F64) for s in st32], None, impl="reference")
    compare_runs(REC, got, ref, 1.5e-2, names, st_names)


def test_float32_slow_matrices_with_float64_inputs():
    """The slow matrices may stay float32 parameters: their gradients come back in float32."""
    names, xs, _, st = make_inputs(REC, B=2, T=9, H=2, K=3, seed=6)
    mixed = [x.float() if n.startswith("rec_") else x for n, x in zip(names, xs)]
    got = run_with_grads(REC, mixed, st, None, impl="compiled", checkpoint_every=4)
    assert got[0].dtype == F64
    assert [g.dtype for g in got[2]] == [x.dtype for x in mixed]
    ref = run_with_grads(REC, [x.to(F64) for x in mixed], st, None, impl="reference")
    compare_runs(REC, got, ref, 1e-6, names, [f"initial_state.{n}" for n in "Wy"])


@pytest.mark.parametrize("k", [0, 5, 9])
def test_reset_equals_two_independent_runs(k):
    """A reset at k in every row == a run over [0, k) from the initial state, then one over [k, T) from zeros:
    outputs, final state, and the gradients of every input and of the initial state (checkpoint_every 5: k = 5 is a
    chunk boundary, k = 9 is not)."""
    T = 14
    names, xs, st_names, st = make_inputs(REC, B=B, T=T, H=H, K=D, seed=k)
    reset = make_reset(B, T, [(b, k) for b in range(B)])
    got = run_with_grads(REC, xs, st, reset, impl="compiled", checkpoint_every=5)
    w_out, w_W, w_y = loss_weights([got[0], *got[1]])

    leaves = [x.clone().requires_grad_() for x in xs]
    st_leaves = [s.clone().requires_grad_() for s in st]
    per_step, shared = leaves[:4], leaves[4:]
    loss = 0.0
    outs = []
    if k > 0:
        out_a, _ = call(REC, [x[:, :k] for x in per_step] + shared, st_leaves, impl="compiled", checkpoint_every=5)
        loss = loss + (w_out[:, :k] * out_a).sum()
        outs.append(out_a)
    out_b, (W_b, y_b) = call(REC, [x[:, k:] for x in per_step] + shared, None, impl="compiled", checkpoint_every=5)
    loss = loss + (w_out[:, k:] * out_b).sum() + (w_W * W_b).sum() + (w_y * y_b).sum()
    outs.append(out_b)
    grads = torch.autograd.grad(loss, leaves + st_leaves, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves + st_leaves)]

    assert_rel_close(got[0], torch.cat(outs, dim=1).detach(), 1e-12, "output")
    assert_rel_close(got[1][0], W_b.detach(), 1e-12, "final W")
    assert_rel_close(got[1][1], y_b.detach(), 1e-12, "final y")
    for name, a, e in zip([*names, *st_names], got[2] + got[3], grads):
        assert_rel_close(a, e, 1e-10, f"grad of {name}")


@pytest.mark.parametrize("T", [1, 19])
def test_inputs_not_mutated(T):
    """Inputs, state and reset are bit-identical after forward + backward; no output aliases an input
    (T = 1: the [B, H, T, ...] layout of an input is then a view of it, not a copy)."""
    names, xs, st_names, st = make_inputs(REC, B=B, T=T, H=H, K=D, seed=8)
    reset = standard_reset(B, T, boundaries=(8,))
    xs = [x.requires_grad_() for x in xs]
    st = [s.requires_grad_() for s in st]
    before = [t.detach().clone() for t in [*xs, *st, reset]]
    out, fin = call(REC, xs, st, reset, impl="compiled", checkpoint_every=8)
    outs = [out, *fin]
    sum((w * t).sum() for w, t in zip(loss_weights(outs), outs)).backward()
    for name, b, a in zip([*names, *st_names, "reset"], before, [*xs, *st, reset]):
        assert torch.equal(b, a.detach()), f"{name} was modified in place"
    input_ptrs = {t.untyped_storage().data_ptr() for t in [*xs, *st, reset]}
    for i, t in enumerate(outs):
        assert t.untyped_storage().data_ptr() not in input_ptrs, f"returned tensor {i} aliases an input"


def test_threads_give_bit_identical_results():
    """Two numba threads == one thread, bit for bit: the (b, h) pairs share no scratch buffers, and the shared
    parameters' gradient is reduced over b after the parallel loop (no races, deterministic order)."""
    _, xs, _, st = make_inputs(REC, B=4, T=30, H=3, K=D, seed=11)
    reset = standard_reset(4, 30, boundaries=(7,))
    one = run_with_grads(REC, xs, st, reset, impl="compiled", checkpoint_every=7)
    torch.set_num_threads(2)  # the autouse fixture restores the thread count
    two = run_with_grads(REC, xs, st, reset, impl="compiled", checkpoint_every=7)
    for a, e in zip([one[0], *one[1], *one[2], *one[3]], [two[0], *two[1], *two[2], *two[3]]):
        assert torch.equal(a, e)


def test_partial_input_grads():
    """Only some inputs require gradients (the others get none, and nothing fails)."""
    _, xs, _, st = make_inputs(REC, B=B, T=7, H=H, K=D, seed=9)
    q = xs[0].clone().requires_grad_()
    rq = xs[4].clone().requires_grad_()
    out, _ = ops.rec_delta(q, *xs[1:4], rq, *xs[5:], initial_state=tuple(st), impl="compiled")
    gq, grq = torch.autograd.grad(out.sum(), (q, rq))
    q2 = xs[0].clone().requires_grad_()
    rq2 = xs[4].clone().requires_grad_()
    out2, _ = ops.rec_delta(q2, *xs[1:4], rq2, *xs[5:], initial_state=tuple(st), impl="reference")
    eq, erq = torch.autograd.grad(out2.sum(), (q2, rq2))
    assert_rel_close(gq, eq, TOL, "grad of q")
    assert_rel_close(grq, erq, TOL, "grad of rec_q")


def test_auto_selects_compiled_on_cpu():
    _, xs, _, _ = make_inputs(REC, B=1, T=2, H=1, K=2)
    assert resolve("rec_delta", None, xs[0]).fn is rdc.rec_delta_compiled
    assert resolve("rec_delta", "auto", xs[0]).fn is rdc.rec_delta_compiled
    assert available_implementations()["rec_delta"][0] == "compiled"


def test_errors_match_checkpointed():
    _, xs, _, st = make_inputs(REC, B=B, T=4, H=H, K=D)
    for kw in ({"checkpoint_every": 0}, {"checkpoint_every": 2.0}, {"checkpoint_every": True}):
        with pytest.raises(ValueError) as e1:
            call(REC, xs, st, impl="compiled", **kw)
        with pytest.raises(ValueError) as e2:
            call(REC, xs, st, impl="checkpointed", **kw)
        assert str(e1.value) == str(e2.value)
    bad = [xs[0][..., :2], *xs[1:]]
    with pytest.raises(ValueError) as e1:
        call(REC, bad, st, impl="compiled")
    with pytest.raises(ValueError) as e2:
        call(REC, bad, st, impl="checkpointed")
    assert str(e1.value) == str(e2.value)


def test_non_contiguous_inputs_give_identical_results():
    """The kernels read the ``[B, T, H, ...]`` inputs in place: non-contiguous views (every other step and head of
    larger tensors, strided slow matrices and state) give bit-identical outputs and gradients to contiguous ones."""
    T = 11
    _, xs, _, st = make_inputs(REC, B=3, T=T, H=H, K=D, seed=21)
    reset = standard_reset(3, T, boundaries=(4,))
    ref = run_with_grads(REC, xs, st, reset, impl="compiled", checkpoint_every=4)

    def per_step(x: torch.Tensor) -> torch.Tensor:  # inside a tensor with twice the steps and heads
        big = torch.randn(x.shape[0], 2 * x.shape[1], 2 * x.shape[2], *x.shape[3:], dtype=x.dtype)
        big[:, ::2, 1::2] = x
        return big[:, ::2, 1::2]

    def strided(x: torch.Tensor) -> torch.Tensor:  # the last axis with stride 2
        return torch.stack([x, torch.randn_like(x)], dim=-1)[..., 0]

    xs_nc = [per_step(x) for x in xs[:4]] + [strided(x) for x in xs[4:]]
    st_nc = [strided(s) for s in st]
    assert all(torch.equal(a, e) and not a.is_contiguous() for a, e in zip(xs_nc + st_nc, xs + st))
    got = run_with_grads(REC, xs_nc, st_nc, reset, impl="compiled", checkpoint_every=4)
    for a, e in zip([got[0], *got[1], *got[2], *got[3]], [ref[0], *ref[1], *ref[2], *ref[3]]):
        assert torch.equal(a, e)


@pytest.mark.parametrize(("Bn", "T", "Hn", "Dn", "chunk"), [(1, 7, 1, 2, 3), (3, 13, 5, 7, 4), (2, 9, 3, 19, 20)])
def test_odd_sizes_match_reference(Bn, T, Hn, Dn, chunk):
    """Odd batch, head and head sizes (not multiples of a vector width; D = 2), chunks that do not divide T."""
    names, xs, st_names, st = make_inputs(REC, B=Bn, T=T, H=Hn, K=Dn, seed=31 + Dn)
    reset = make_reset(Bn, T, [(0, 5), (Bn - 1, T - 1)])
    got = run_with_grads(REC, xs, st, reset, impl="compiled", checkpoint_every=chunk)
    ref = run_with_grads(REC, xs, st, reset, impl="reference")
    compare_runs(REC, got, ref, TOL, names, st_names)
