"""The compiled (numba) Delta LSTM against the float64 reference, for every version (paper.md A.6).

Every comparison covers the output, every final-state component (W, R, y, c) and the gradients of every input
and initial-state component for a random weighted sum of the output and the final states. The checkpointed
implementation runs through the same comparisons so that both non-reference paths stay covered.

A benchmark (compiled vs checkpointed vs reference, forward + backward) runs only with
``FASTWEIGHTS_BENCH=1 pytest -s -m slow tests/ops/test_ops_delta_lstm_compiled.py`` (``FASTWEIGHTS_BENCH_THREADS``
sets the thread count; default: every core).
"""

from __future__ import annotations

import os
import time

import pytest
import torch

pytest.importorskip("numba")

from _ops_helpers import (
    LSTM,
    assert_rel_close,
    call,
    compare_runs,
    loss_weights,
    make_inputs,
    make_reset,
    run_with_grads,
    standard_reset,
)

from fastweights import ops
from fastweights.ops.common.registry import resolve
from fastweights.ops.delta_lstm import compiled as compiled_mod

F64 = torch.float64
TOL = 1e-9
VERSIONS = (1, 2, 3, 4)
SHAPE = {"B": 2, "H": 2, "K": 3, "V": 4}  # K != V


def _chunk_sizes(T: int) -> list[int | None]:
    """1, 3, T and > T (and the default, None): every chunk remainder pattern the kernels have."""
    return [None, *sorted({1, 3, T, T + 5})]


# --------------------------------------------------------------------------------- reference equivalence


@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 100])
@pytest.mark.parametrize("version", VERSIONS)
def test_matches_reference(version, T):
    """Random initial state; resets at t = 0, mid-sequence, at chunk boundaries (3, 63: of checkpoint_every 3;
    16: the default chunk here; 64: the chunked delta rule's chunk) and at the last step."""
    case = LSTM[version]
    names, xs, st_names, st = make_inputs(case, T=T, **SHAPE, seed=10 * T + version)
    reset = standard_reset(2, T, boundaries=(3, 16, 63, 64))
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    for impl in ("compiled", "checkpointed"):
        # (T and T + 5 are the same single chunk for the checkpointed scan; the compiled buffers differ)
        for cs in _chunk_sizes(T) if impl == "compiled" else _chunk_sizes(T)[:-1]:
            kw = {} if cs is None else {"checkpoint_every": cs}
            got = run_with_grads(case, xs, st, reset, impl=impl, **kw)
            compare_runs(case, got, ref, TOL, names, st_names)


@pytest.mark.parametrize("version", VERSIONS)
def test_matches_reference_zero_state_no_reset(version):
    """The ``initial_state=None, reset=None`` path (zeros; v2-v4 read a uniform softmax at t = 0)."""
    case, T = LSTM[version], 40
    names, xs, st_names, _ = make_inputs(case, T=T, **SHAPE, seed=7)
    got = run_with_grads(case, xs, None, None, impl="compiled", checkpoint_every=16)
    ref = run_with_grads(case, xs, None, None, impl="reference")
    compare_runs(case, got, ref, TOL, names, st_names)


@pytest.mark.parametrize("version", VERSIONS)
def test_gradcheck(version):
    """Finite differences of every input and initial-state component, through the output and every
    final-state component; checkpoint_every 2 over T = 3 (a ragged last chunk) and a reset on its boundary, which
    the initial state reaches before (resets inside a chunk: see test_matches_reference)."""
    case = LSTM[version]
    _, xs, _, st = make_inputs(case, B=1, T=3, H=1, K=2, V=3, seed=17)
    reset = make_reset(1, 3, [(0, 2)])
    leaves = tuple(x.clone().requires_grad_() for x in [*xs, *st])
    n = len(xs)

    def fn(*ts):
        out, fin = call(case, list(ts[:n]), list(ts[n:]), reset, impl="compiled", checkpoint_every=2)
        return (out, *fin)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("version", VERSIONS)
def test_odd_sizes_match_reference(version):
    """Odd batch, head and value sizes (V = 5, not a multiple of a vector width), K != V, a ragged last chunk and
    resets inside and at the start of chunks."""
    case, T = LSTM[version], 11
    names, xs, st_names, st = make_inputs(case, B=3, T=T, H=3, K=7, V=5, seed=40 + version)
    reset = make_reset(3, T, [(0, 4), (1, 5), (2, 10)])
    got = run_with_grads(case, xs, st, reset, impl="compiled", checkpoint_every=4)
    ref = run_with_grads(case, xs, st, reset, impl="reference")
    compare_runs(case, got, ref, TOL, names, st_names)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_non_contiguous_inputs_give_identical_results(dtype):
    """Inputs and initial state as strided views (a [B, H, T, ...] layout seen batch-first, every other element
    of a larger tensor) give bit-identical outputs, final states and gradients to contiguous copies."""
    case, T = LSTM[4], 13
    _, xs, _, st = make_inputs(case, T=T, **SHAPE, dtype=dtype, seed=9)
    reset = standard_reset(2, T, boundaries=(5,))
    strided = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in xs[:4]]
    strided += [torch.stack([x, x], dim=-1)[..., 0] for x in xs[4:]]
    st_strided = [torch.stack([s, s], dim=1)[:, 1] if i % 2 else s.transpose(0, 1).contiguous().transpose(0, 1)
                  for i, s in enumerate(st)]
    assert not all(x.is_contiguous() for x in strided + st_strided)
    got = run_with_grads(case, strided, st_strided, reset, impl="compiled", checkpoint_every=4)
    want = run_with_grads(case, xs, st, reset, impl="compiled", checkpoint_every=4)
    for a, b in zip([got[0], *got[1], *got[2], *got[3]], [want[0], *want[1], *want[2], *want[3]]):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------- precision


@pytest.mark.parametrize("version", VERSIONS)
def test_float32_long_sequence(version):
    """float32 at T = 257 (ragged last chunk) within 1e-4 of the float64 reference run on the same
    (already rounded) inputs: output, final state and every gradient."""
    case, T = LSTM[version], 257
    names, xs, st_names, st = make_inputs(case, B=1, T=T, H=2, K=8, V=8, dtype=torch.float32, seed=3)
    reset = make_reset(1, T, [(0, 100), (0, 200)])  # not at t = 0: the initial state keeps its gradients
    got = run_with_grads(case, xs, st, reset, impl="compiled")
    ref = run_with_grads(case, [x.to(F64) for x in xs], [s.to(F64) for s in st], reset, impl="reference")
    assert got[0].dtype == torch.float32 and all(f.dtype == torch.float32 for f in got[1])
    assert all(g.dtype == torch.float32 for g in got[2] + got[3])
    compare_runs(case, got, ref, 1e-4, names, st_names)


def test_bfloat16_inputs_run_and_return_bfloat16():
    case = LSTM[4]
    _, xs, _, st = make_inputs(case, T=20, **SHAPE, dtype=torch.bfloat16)
    xs = [x.requires_grad_() for x in xs]
    out, fin = call(case, xs, st, standard_reset(2, 20), impl="compiled", checkpoint_every=6)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert all(f.dtype == torch.float32 for f in fin)  # the state is kept in float32
    (out.float().sum() + sum(f.sum() for f in fin)).backward()
    assert all(x.grad is not None and x.grad.dtype == torch.bfloat16 for x in xs)
    # equals float32 compute on the same rounded inputs, rounded once at the end
    ref, _ = call(case, [x.detach().float() for x in xs], st, standard_reset(2, 20), impl="compiled",
                  checkpoint_every=6)
    assert torch.equal(out, ref.to(torch.bfloat16))


# --------------------------------------------------------------------------------------- reset, purity


@pytest.mark.parametrize("version", VERSIONS)
def test_reset_equals_two_independent_runs(version):
    """A reset of every row at k == a run on [0, k) from the initial state, then a fresh run on [k, T)."""
    case, T, k = LSTM[version], 23, 9
    _, xs, _, st = make_inputs(case, T=T, **SHAPE, seed=5)
    reset = make_reset(2, T, [(0, k), (1, k)])
    out, fin = call(case, xs, st, reset, impl="compiled", checkpoint_every=4)
    out1, _ = call(case, [x[:, :k] for x in xs], st, impl="compiled", checkpoint_every=4)
    out2, fin2 = call(case, [x[:, k:] for x in xs], None, impl="compiled", checkpoint_every=4)
    assert_rel_close(out, torch.cat([out1, out2], dim=1), 1e-12, "output")
    for a, b in zip(fin, fin2):
        assert_rel_close(a, b, 1e-12, "final state")


def test_inputs_not_mutated():
    """Inputs, initial state and reset are bit-identical after forward + backward, and nothing returned
    shares memory with them (including contiguous inputs, which the kernels read without a copy)."""
    case, T = LSTM[4], 19
    _, xs, _, st = make_inputs(case, T=T, **SHAPE)
    xs = [x.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_() for x in xs]
    st = [s.requires_grad_() for s in st]
    reset = standard_reset(2, T, boundaries=(8, 16))
    before = [t.detach().clone() for t in [*xs, *st, reset]]
    out, fin = call(case, xs, st, reset, impl="compiled", checkpoint_every=8)
    outs = [out, *fin]
    sum((w * t).sum() for w, t in zip(loss_weights(outs), outs)).backward()
    for i, (b, a) in enumerate(zip(before, [*xs, *st, reset])):
        assert torch.equal(b, a.detach()), f"argument {i} was modified in place"
    input_ptrs = {t.untyped_storage().data_ptr() for t in [*xs, *st, reset]}
    assert all(t.untyped_storage().data_ptr() not in input_ptrs for t in outs)


# -------------------------------------------------------------------------------------- registry, errors


def test_auto_selects_compiled_on_cpu():
    q = torch.zeros(1, 2, 1, 3, 2)
    assert resolve("delta_lstm", None, q).fn is compiled_mod.delta_lstm_compiled
    assert ops.available_implementations()["delta_lstm"][0] == "compiled"


def test_errors_match_checkpointed():
    case = LSTM[2]
    _, xs, _, st = make_inputs(case, T=3, **SHAPE)
    for kwargs in ({"checkpoint_every": 0}, {"checkpoint_every": 2.0}, {"version": 5}):
        messages = []
        for impl in ("compiled", "checkpointed"):
            with pytest.raises(ValueError) as err:
                call(case, xs, st, impl=impl, **kwargs)
            messages.append(str(err.value))
        assert messages[0] == messages[1]


# ------------------------------------------------------------------------------------------- benchmark


def _time_fwd_bwd(fn, xs, st, repeats: int = 3) -> float:
    """min over ``repeats`` of forward + backward wall time (after one warm-up run)."""
    best = float("inf")
    for r in range(repeats + 1):
        leaves = [x.detach().requires_grad_() for x in xs]
        init = ops.DeltaLSTMState(*(s.detach().requires_grad_() for s in st))
        t0 = time.perf_counter()
        out, fin = fn(leaves, init)
        (out.sum() + fin.R.sum() + fin.c.sum()).backward()
        if r > 0:
            best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FASTWEIGHTS_BENCH") != "1", reason="benchmark: set FASTWEIGHTS_BENCH=1")
@pytest.mark.parametrize("shape", ["paper", "lm"])
def test_benchmark(shape):
    """Forward + backward of version 4 in float32, min of 3 after a warm-up. The reference is skipped where its
    autograd graph (about four [V, V] matrices per gate, (b, h) and step: 48 B H T D^2 bytes) would not fit in half
    the available memory (at ``lm``: ~13 GB), or where its forward alone takes > 20 s (fwd + bwd x 4 > ~60 s each)."""
    B, T, H, D = {"paper": (16, 512, 16, 16), "lm": (4, 2048, 8, 64)}[shape]
    # FASTWEIGHTS_BENCH_THREADS (default: every core); the autouse fixture restores the thread count afterwards
    torch.set_num_threads(int(os.environ.get("FASTWEIGHTS_BENCH_THREADS", os.cpu_count() or 1)))
    _, xs, _, st = make_inputs(LSTM[4], B=B, T=T, H=H, K=D, V=D, dtype=torch.float32)
    print(f"\ndelta_lstm v4 {shape} B={B} T={T} H={H} D={D} fp32 threads={torch.get_num_threads()} "
          f"load {os.getloadavg()}", flush=True)
    for impl in ("compiled", "checkpointed", "reference"):
        def fn(leaves, init, impl=impl):
            return ops.delta_lstm(*leaves, version=4, initial_state=init, output_final_state=True, impl=impl)

        if impl == "reference":
            graph_bytes = 48 * B * H * T * D * D
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            if graph_bytes > available / 2:
                print(f"  {impl}: skipped (its graph needs ~{graph_bytes / 2**30:.1f} GiB, "
                      f"{available / 2**30:.1f} GiB available)", flush=True)
                continue
            t0 = time.perf_counter()
            with torch.no_grad():
                fn(xs, ops.DeltaLSTMState(*st))
            if time.perf_counter() - t0 > 20:
                print(f"  {impl}: skipped (forward alone {time.perf_counter() - t0:.1f} s)", flush=True)
                continue
        print(f"  {impl}: fwd+bwd {_time_fwd_bwd(fn, xs, st):.3f} s (min of 3) | load {os.getloadavg()}", flush=True)
