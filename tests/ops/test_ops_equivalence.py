"""Default implementation == reference implementation (float64), chunk-size sweeps and reset semantics.

Every comparison covers the output, every final-state component and the gradients of every input and
every initial-state component, for a random weighted sum of the output and the final states.
"""

from __future__ import annotations

import pytest
import torch
from _ops_helpers import (
    ALL_CASES,
    CHUNK_KWARG_CASES,
    DELTA,
    RECURRENT_CASES,
    SUM,
    OpCase,
    assert_rel_close,
    call,
    case_params,
    compare_runs,
    interval_kw,
    make_inputs,
    make_reset,
    run_with_grads,
    standard_reset,
)

TOL = 1e-9


def _shape(case: OpCase) -> dict:
    # K != V wherever the op allows it (sum/delta rule, Delta RNN/LSTM, Delta MLP's D != F).
    return {"B": 2, "H": 2, "K": 3, "V": 3 if case.square else 4}


@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 100])
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_default_matches_reference(case, T):
    """Random initial state and resets at t = 0, mid-sequence, at chunk boundaries (16: the checkpointed
    scan's default chunk at these lengths; 64: the chunked rule's default chunk) and at the last step."""
    names, xs, st_names, st = make_inputs(case, T=T, **_shape(case), seed=T)
    reset = standard_reset(2, T, boundaries=(16, 64))
    got = run_with_grads(case, xs, st, reset)
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    compare_runs(case, got, ref, TOL, names, st_names)


@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_default_matches_reference_zero_state_no_reset(case):
    """The ``initial_state=None, reset=None`` path (zeros, no masks) with a chunk boundary inside."""
    T = 70
    names, xs, st_names, _ = make_inputs(case, T=T, **_shape(case), seed=7)
    got = run_with_grads(case, xs, None, None)
    ref = run_with_grads(case, xs, None, None, impl="reference")
    compare_runs(case, got, ref, TOL, names, st_names)  # no initial state: no state gradients


@pytest.mark.parametrize("impl", [None, "reference"])
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_final_state_is_none_unless_requested(case, impl):
    _, xs, _, st = make_inputs(case, T=3, **_shape(case))
    out, fin = call(case, xs, st, output_final_state=False, impl=impl)
    assert fin is None
    out2, fin2 = call(case, xs, st, output_final_state=True, impl=impl)
    assert fin2 is not None
    assert torch.equal(out, out2)


# ------------------------------------------------------------------------------------------ chunk sweeps


@pytest.mark.parametrize("T", range(1, 18))
@pytest.mark.parametrize("case", case_params([SUM, DELTA]))
def test_chunked_matches_reference_for_every_remainder(case, T):
    """chunk_size 8 and T = 1..17 covers every T mod chunk_size (and T < chunk_size); resets at a chunk
    boundary (8) and inside a chunk."""
    names, xs, st_names, st = make_inputs(case, T=T, **_shape(case), seed=100 + T)
    reset = make_reset(2, T, [(0, 8), (1, 3), (1, 13)])
    got = run_with_grads(case, xs, st, reset, chunk_size=8)
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    compare_runs(case, got, ref, TOL, names, st_names)


@pytest.mark.parametrize("chunk", [1, 3, "T", "T+5"])
@pytest.mark.parametrize("T", [1, 10])
@pytest.mark.parametrize("case", case_params(CHUNK_KWARG_CASES))
def test_chunk_size_sweep_matches_reference(case, T, chunk):
    """chunk_size (the chunked rules) / checkpoint_every (the checkpointed scans) 1, 3, T and > T."""
    chunk_size = {"T": T, "T+5": T + 5}.get(chunk, chunk)
    names, xs, st_names, st = make_inputs(case, T=T, **_shape(case), seed=200 + T)
    reset = make_reset(2, T, [(0, 3), (1, 6)])
    got = run_with_grads(case, xs, st, reset, **interval_kw(case, chunk_size))
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    compare_runs(case, got, ref, TOL, names, st_names)


@pytest.mark.parametrize("case", case_params(RECURRENT_CASES))
def test_checkpointed_default_chunk_matches_reference_at_long_T(case):
    """T = 300: the default chunk (~sqrt(T) = 18) gives a ragged last chunk; resets on chunk starts."""
    T = 300
    names, xs, st_names, st = make_inputs(case, B=2, T=T, H=1, K=2, V=3 if not case.square else 2, seed=9)
    reset = make_reset(2, T, [(0, 18), (1, 36), (1, 299)])
    got = run_with_grads(case, xs, st, reset)
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    compare_runs(case, got, ref, TOL, names, st_names)


# ---------------------------------------------------------------------------------------------- resets


def _slice(case: OpCase, names, xs, b: int, t0: int, t1: int):
    """Batch ``b`` and steps ``t0:t1`` of every per-step input (``rec_delta``'s slow matrices are shared)."""
    return [x if n.startswith("rec_") else x[b:b + 1, t0:t1] for n, x in zip(names, xs)]


@pytest.mark.parametrize("k", [0, 1, 8, 13])
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_reset_equals_two_independent_runs(case, k):
    """A reset at step k (in batch 0 only) == a run over [0, k) from the initial state followed by an
    independent run over [k, T) from zero state; batch 1 (no reset) == a plain run."""
    T = 20
    kw = interval_kw(case, 8) if case.chunk_kwarg else {}  # k = 8 is then a chunk boundary
    names, xs, st_names, st = make_inputs(case, T=T, **_shape(case), seed=k)
    reset = make_reset(2, T, [(0, k)])
    out, fin = call(case, xs, st, reset, **kw)

    if k > 0:
        out_a, _ = call(case, _slice(case, names, xs, 0, 0, k), [s[:1] for s in st], None, **kw)
        assert_rel_close(out[:1, :k], out_a, 1e-10, f"{case.id}: output before the reset")
    out_b, fin_b = call(case, _slice(case, names, xs, 0, k, T), None, None, **kw)
    assert_rel_close(out[:1, k:], out_b, 1e-10, f"{case.id}: output after the reset")
    for name, a, e in zip(st_names, fin, fin_b):
        assert_rel_close(a[:1], e, 1e-10, f"{case.id}: final {name} after the reset")

    out_c, fin_c = call(case, _slice(case, names, xs, 1, 0, T), [s[1:] for s in st], None, **kw)
    assert_rel_close(out[1:], out_c, 1e-10, f"{case.id}: output of the batch element without reset")
    for name, a, e in zip(st_names, fin, fin_c):
        assert_rel_close(a[1:], e, 1e-10, f"{case.id}: final {name} of the batch element without reset")


@pytest.mark.parametrize("impl", [None, "reference"])
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_reset_at_every_step_makes_steps_independent(case, impl):
    """With a reset before every step, step t only sees its own inputs: it equals a one-step run."""
    T = 4
    names, xs, _, st = make_inputs(case, T=T, **_shape(case), seed=3)
    out, _ = call(case, xs, st, torch.ones(2, T, dtype=torch.bool), impl=impl)
    for t in range(T):
        sl = [x if n.startswith("rec_") else x[:, t:t + 1] for n, x in zip(names, xs)]
        one, _ = call(case, sl, None, None, impl=impl)
        assert_rel_close(out[:, t:t + 1], one, 1e-12, f"{case.id}: step {t}")


@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_carrying_the_final_state_equals_one_long_run(case):
    """Running [0, k) and then [k, T) from the returned final state equals one run over [0, T)
    (segment-wise processing / carry-over), including gradients of the first segment's inputs."""
    T, k = 21, 13
    kw = interval_kw(case, 8) if case.chunk_kwarg else {}
    names, xs, st_names, st = make_inputs(case, T=T, **_shape(case), seed=11)
    leaves = [x.clone().requires_grad_() for x in xs]
    out, fin = call(case, leaves, st, None, **kw)
    first = [x if n.startswith("rec_") else x[:, :k] for n, x in zip(names, leaves)]
    second = [x if n.startswith("rec_") else x[:, k:] for n, x in zip(names, leaves)]
    out_a, fin_a = call(case, first, st, None, **kw)
    out_b, fin_b = call(case, second, fin_a, None, **kw)
    assert_rel_close(torch.cat([out_a, out_b], dim=1), out, 1e-10, f"{case.id}: output")
    for name, a, e in zip(st_names, fin_b, fin):
        assert_rel_close(a, e, 1e-10, f"{case.id}: final {name}")
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    g_full = torch.autograd.grad((w * out).sum(), leaves)
    g_seg = torch.autograd.grad((w * torch.cat([out_a, out_b], dim=1)).sum(), leaves)
    for name, a, e in zip(names, g_seg, g_full):
        assert_rel_close(a, e, 1e-10, f"{case.id}: grad of {name} through the carried state")


@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_strided_inputs_and_batch_expanded_initial_state(case):
    """Inputs as strided views (as produced by splitting a fused projection) and an initial state expanded
    over the batch from one learned state (stride 0): same results and gradients as contiguous tensors."""
    T = 20
    kw = interval_kw(case, 8) if case.chunk_kwarg else {}
    names, xs, st_names, st = make_inputs(case, T=T, **_shape(case), seed=4)
    strided = []
    for n, x in zip(names, xs):
        y = torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0]  # stride 2 along the last axis
        if not n.startswith("rec_"):
            y = y.transpose(0, 1).contiguous().transpose(0, 1)  # time-major memory
        assert not y.is_contiguous() and torch.equal(y, x)
        strided.append(y)
    base = [s[:1].clone() for s in st]
    expanded = [b.expand_as(s) for b, s in zip(base, st)]
    reset = standard_reset(2, T, boundaries=(8,))
    got = run_with_grads(case, strided, expanded, reset, **kw)
    ref = run_with_grads(case, xs, [e.contiguous() for e in expanded], reset, impl="reference")
    compare_runs(case, got, ref, TOL, names, st_names)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", case_params(ALL_CASES))
def test_default_on_cuda_matches_cpu_reference(case, dtype):  # pragma: no cover - GPU machines only
    T = 65
    names, xs, st_names, st = make_inputs(case, T=T, **_shape(case), dtype=dtype, seed=65)
    reset = standard_reset(2, T, boundaries=(16, 64))
    got = run_with_grads(case, [x.cuda() for x in xs], [s.cuda() for s in st], reset.cuda())
    got = tuple([t.cpu() for t in part] if isinstance(part, list) else part.cpu() for part in got)
    ref = run_with_grads(case, [x.double() for x in xs], [s.double() for s in st], reset, impl="reference")
    compare_runs(case, got, ref, TOL if dtype == torch.float64 else 1e-4, names, st_names)
