"""The Triton kernels (``impl="triton"``) against the float64 reference.

Where they run:

* on a machine with a CUDA GPU (and no ``TRITON_INTERPRET``): compiled, on CUDA tensors;
* elsewhere, under Triton's CPU interpreter on CPU tensors, tiny shapes. The interpreter must be switched on
  (``TRITON_INTERPRET=1``) before triton is imported, and other test modules of the same pytest process must not
  see that setting, so in a plain ``pytest`` run this module defines one test, :func:`test_interpreter_suite`,
  that re-runs the module in a subprocess with the variable set. ``TRITON_INTERPRET=1 pytest
  tests/ops/test_ops_triton.py`` runs the kernel tests directly (one result per case).

Without triton installed, the kernel tests skip. Tolerances: float32 1e-4 (relative Frobenius error = relative
RMSE); bfloat16/float16 inputs 1e-2 for outputs and final states, 2e-2 for gradients (the reference runs in float64
on the same, already rounded, inputs).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _ops_helpers import (
    DD,
    DELTA,
    F64,
    LSTM,
    MLP2,
    REC,
    RNN1,
    RNN2,
    SUM,
    assert_rel_close,
    call,
    case_params,
    make_inputs,
    make_reset,
    run_with_grads,
    standard_reset,
)

TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on", "y")
NATIVE = torch.cuda.is_available() and not INTERPRET
RUN_KERNELS = TRITON and (INTERPRET or NATIVE)  # else: test_interpreter_suite runs them in a subprocess
DEV = "cuda" if NATIVE else "cpu"
needs_triton = pytest.mark.skipif(not TRITON, reason="triton is not installed (pip install 'fastweights[triton]')")

TOL32 = 1e-4
TOL_HALF_OUT, TOL_HALF_GRAD = 1e-2, 2e-2
RECURRENT = [RNN1, RNN2, *LSTM.values(), REC]


def _dev(ts):
    return None if ts is None else [t.to(DEV) for t in ts]


def _check(case, B, T, H, K, V, *, dtype=torch.float32, reset=None, state=True, seed=0, tol_out=TOL32,
           tol_grad=TOL32, **kwargs):
    """fwd + bwd of ``impl="triton"`` (on DEV) vs the float64 reference (on the CPU) on the same inputs."""
    names, xs, st_names, st = make_inputs(case, B=B, T=T, H=H, K=K, V=V, dtype=dtype, seed=seed)
    st = st if state else None
    o, fin, gx, gs = run_with_grads(case, _dev(xs), _dev(st), None if reset is None else reset.to(DEV),
                                    impl="triton", **kwargs)
    o_r, fin_r, gx_r, gs_r = run_with_grads(case, [x.to(F64) for x in xs], None if st is None else
                                            [s.to(F64) for s in st], reset, impl="reference")
    assert o.dtype == dtype and o.device.type == DEV
    assert_rel_close(o.cpu(), o_r, tol_out, f"{case.id}: output")
    for name, a, e in zip(st_names, fin, fin_r):
        assert a.dtype == torch.float32, f"{case.id}: final {name} has dtype {a.dtype}"
        assert_rel_close(a.cpu(), e, tol_out, f"{case.id}: final {name}")
    for name, a, e in zip([*names, *(st_names if state else [])], [*gx, *gs], [*gx_r, *gs_r]):
        assert e.abs().sum() > 0, f"{case.id}: reference gradient of {name} is identically zero"
        assert_rel_close(a.cpu(), e, tol_grad, f"{case.id}: grad of {name}")


# ------------------------------------------------------------------------------------- chunked sum / delta rule


@needs_triton
@pytest.mark.parametrize("case", case_params([SUM, DELTA]))
def test_linear_resets_state_and_ragged_chunks(case):
    """K != V, neither a power of two; T = 20 with chunks of 16 (a padded last chunk); resets at t = 0, mid-chunk,
    on a chunk boundary and at the last step; gradients of every input and the initial state."""
    _check(case, 2, 20, 2, 12, 24, reset=standard_reset(2, 20, (16,)), chunk_size=16)


@needs_triton
@pytest.mark.parametrize("case", case_params([SUM, DELTA]))
def test_linear_no_state_no_reset_short(case):
    _check(case, 1, 5, 1, 16, 16, state=False)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", case_params([SUM, DELTA]))
def test_linear_half_precision(case, dtype):
    _check(case, 2, 20, 2, 16, 16, dtype=dtype, reset=standard_reset(2, 20, (16,)), chunk_size=16,
           tol_out=TOL_HALF_OUT, tol_grad=TOL_HALF_GRAD)


@needs_triton
@pytest.mark.parametrize("chunk", [32, 64])
@pytest.mark.parametrize("blocked", [True, None], ids=["blocked", "auto"])
def test_delta_rule_inverse_variants(monkeypatch, blocked, chunk):
    """The chunk-local inverse ``(I + A)^-1``: the blocked form (16 x 16 substitution + merges, used for
    half-precision inputs on a GPU) forced on float32, and the automatic choice on bfloat16 (blocked on a GPU,
    row by row under the interpreter); resets straddle the 16-blocks, T = 70 pads the last chunk."""
    from fastweights.ops.triton import chunked

    monkeypatch.setattr(chunked, "BLOCKED_INVERSE", blocked)
    B, T = 2, 70
    reset = make_reset(B, T, [(0, 5), (1, 40), (1, 33)])
    if blocked:
        _check(DELTA, B, T, 1, 16, 16, reset=reset, chunk_size=chunk)
    else:
        _check(DELTA, B, T, 1, 16, 16, dtype=torch.bfloat16, reset=reset, chunk_size=chunk, tol_out=TOL_HALF_OUT,
               tol_grad=TOL_HALF_GRAD)


@needs_triton
@pytest.mark.parametrize(("case", "K", "V"), [
    pytest.param(DELTA, 32, 32, id="delta_rule-32"), pytest.param(SUM, 64, 48, id="sum_rule-64x48"),
    pytest.param(DELTA, 64, 64, id="delta_rule-64"), pytest.param(DELTA, 128, 128, id="delta_rule-128"),
])
def test_linear_head_sizes(case, K, V):
    _check(case, 1, 20, 1, K, V, reset=make_reset(1, 20, [(0, 9)]), chunk_size=16)


@needs_triton
@pytest.mark.parametrize("case", case_params([SUM, DELTA]))
def test_linear_single_step_with_gradients(case):
    _check(case, 2, 1, 2, 16, 8, reset=make_reset(2, 1, [(1, 0)]))


@needs_triton
@pytest.mark.parametrize("case", case_params([SUM, DELTA]))
def test_linear_prefill_then_decode_equals_full_forward(case):
    """A full forward == a prefill of T - j steps + j fused single steps (no autograd), for every T mod chunk
    offset tried; a reset inside the decoded part."""
    B, T, H, K, V = 2, 19, 1, 16, 16
    _, xs, _, st = make_inputs(case, B=B, T=T, H=H, K=K, V=V, dtype=torch.float32)
    xs, st = _dev(xs), _dev(st)
    reset = make_reset(B, T, [(1, 17)]).to(DEV)
    with torch.no_grad():
        full, (s_full,) = call(case, xs, st, reset, impl="triton", chunk_size=16)
        for j in (1, 3):
            o, s = call(case, [x[:, :T - j] for x in xs], st, reset[:, :T - j], impl="triton", chunk_size=16)
            outs = [o]
            for t in range(T - j, T):
                o, s = call(case, [x[:, t:t + 1] for x in xs], list(s), reset[:, t:t + 1], impl="triton")
                outs.append(o)
            assert_rel_close(torch.cat(outs, 1).cpu(), full.cpu(), 1e-5, f"{case.id}: decode output (j={j})")
            assert_rel_close(s[0].cpu(), s_full.cpu(), 1e-5, f"{case.id}: decode state (j={j})")


@needs_triton
def test_linear_chunk_size_validation():
    _, xs, _, _ = make_inputs(DELTA, B=1, T=4, H=1, K=16, V=16, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"chunk_size: the 'triton' implementation needs a power of two"):
        call(DELTA, _dev(xs), None, impl="triton", chunk_size=24)


@needs_triton
@pytest.mark.parametrize("case", case_params([DD, MLP2]))
def test_compositions_of_the_delta_rule(case):
    """Delta Delta Net (level-1 value size 3D+1) and a two-layer Delta MLP with LayerNorms (F != D)."""
    _check(case, 2, 9, 1, 4, 6, reset=make_reset(2, 9, [(1, 4)]))


# ----------------------------------------------------------------------------------- fused recurrent kernels


@needs_triton
@pytest.mark.parametrize("case", case_params(RECURRENT))
def test_recurrent_resets_state_and_ragged_checkpoints(case):
    """T = 11 with a checkpoint every 4 steps (a short last chunk); K != V (except RDN); resets at t = 0, mid-chunk
    and on a checkpoint boundary; gradients of every input, the recurrent weights (RDN) and the initial state."""
    B, T = 2, 11
    _check(case, B, T, 1, 5, 5 if case.square else 6, reset=make_reset(B, T, [(0, 4), (1, 0), (1, 8)]),
           checkpoint_every=4)


@needs_triton
@pytest.mark.parametrize(("case", "dtype"), [
    pytest.param(RNN2, torch.bfloat16, id="delta_rnn_v2-bf16"), pytest.param(LSTM[4], torch.float16,
                                                                              id="delta_lstm_v4-fp16"),
    pytest.param(REC, torch.bfloat16, id="rec_delta-bf16"),
])
def test_recurrent_half_precision(case, dtype):
    _check(case, 2, 9, 1, 16, 16, dtype=dtype, reset=make_reset(2, 9, [(1, 5)]), checkpoint_every=4,
           tol_out=TOL_HALF_OUT, tol_grad=TOL_HALF_GRAD)


@needs_triton
@pytest.mark.parametrize("case", case_params([RNN1, RNN2, LSTM[3], REC]))
def test_recurrent_forward_only_default_checkpoints(case):
    """No autograd (no checkpoints stored), no initial state, default checkpoint interval, no final state asked."""
    _, xs, _, _ = make_inputs(case, B=2, T=7, H=2, K=4, V=4, dtype=torch.float32, seed=3)
    with torch.no_grad():
        out, fin = call(case, _dev(xs), None, impl="triton", output_final_state=False)
    ref, _ = call(case, [x.to(F64) for x in xs], None, impl="reference", output_final_state=False)
    assert fin is None
    assert_rel_close(out.cpu(), ref, TOL32, f"{case.id}: output")


@needs_triton
@pytest.mark.parametrize("case", case_params([RNN2, LSTM[4], REC]))
def test_recurrent_prefill_then_decode_equals_full_forward(case):
    B, T, j = 2, 6, 2
    _, xs, _, st = make_inputs(case, B=B, T=T, H=1, K=4, V=4, dtype=torch.float32, seed=7)
    xs, st = _dev(xs), _dev(st)
    n_time = 4 if case.op == "rec_delta" else len(xs)  # RDN's recurrent weights have no time axis

    def part(t0, t1):
        return [x[:, t0:t1] if i < n_time else x for i, x in enumerate(xs)]

    with torch.no_grad():
        full, fin = call(case, xs, st, impl="triton")
        o, s = call(case, part(0, T - j), st, impl="triton")
        outs = [o]
        for t in range(T - j, T):
            o, s = call(case, part(t, t + 1), list(s), impl="triton")
            outs.append(o)
    assert_rel_close(torch.cat(outs, 1).cpu(), full.cpu(), 1e-5, f"{case.id}: decoded output")
    for a, e in zip(s, fin):
        assert_rel_close(a.cpu(), e.cpu(), 1e-5, f"{case.id}: decoded state")


# ------------------------------------------------------------------------------------------------ contract


@needs_triton
@pytest.mark.parametrize("case", case_params([DELTA, RNN2, REC]))
def test_inputs_not_mutated(case):
    names, xs, _, st = make_inputs(case, B=2, T=6, H=1, K=4, V=4, dtype=torch.float32, seed=5)
    xs, st = _dev(xs), _dev(st)
    before = [t.clone() for t in (*xs, *st)]
    run_with_grads(case, xs, st, make_reset(2, 6, [(0, 2)]).to(DEV), impl="triton")
    for name, a, b in zip([*names, "state"], (*xs, *st), before):
        assert torch.equal(a, b), f"{case.id}: {name} was modified in place"


@needs_triton
def test_float64_inputs_run_the_pytorch_implementation():
    _, xs, _, st = make_inputs(DELTA, B=1, T=5, H=1, K=4, V=4)
    out, _ = call(DELTA, _dev(xs), _dev(st), impl="triton")
    ref, _ = call(DELTA, xs, st, impl="reference")
    assert out.dtype == torch.float64
    assert_rel_close(out.cpu(), ref, 1e-10, "delta_rule float64")


# ----------------------------------------------------------------- tests that need neither triton nor a GPU


@pytest.mark.skipif(INTERPRET, reason="runs once, in the outer pytest process")
def test_importing_fastweights_does_not_import_triton():
    code = ("import sys, torch, fastweights, fastweights.ops as ops, fastweights.layers\n"
            "q = torch.rand(1, 3, 1, 4)\n"
            "ops.delta_rule(q, q, q, torch.rand(1, 3, 1))\n"  # CPU inputs: the triton entry is not even consulted
            "assert 'triton' not in sys.modules, 'triton was imported'\n"
            "print(ops.available_implementations('cuda')['delta_rule'][0])\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "triton"


@pytest.mark.skipif(INTERPRET, reason="checks the refusal without the interpreter")
def test_explicit_triton_on_cpu_tensors_is_refused():
    _, xs, _, _ = make_inputs(DELTA, B=1, T=3, H=1, K=4, V=4, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"delta_rule: the 'triton' implementation (runs on CUDA tensors|is "
                                           r"unavailable)"):
        call(DELTA, xs, None, impl="triton")


@needs_triton
@pytest.mark.skipif(RUN_KERNELS, reason="the kernel tests run in this process")
def test_interpreter_suite():
    """Run this module's kernel tests under TRITON_INTERPRET=1 in a fresh interpreter (see the module doc)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pytest", str(Path(__file__)), "-q", "-p", "no:cacheprovider",
                          "-W", "ignore::pytest.PytestAssertRewriteWarning"],
                         capture_output=True, text=True, env=env, timeout=900, cwd=Path(__file__).parents[2])
    elapsed = time.perf_counter() - t0
    tail = "\n".join(res.stdout.splitlines()[-40:])
    print(f"interpreter suite: {elapsed:.1f} s\n{tail}")
    assert res.returncode == 0, f"interpreted kernel tests failed ({elapsed:.0f} s):\n{tail}\n{res.stderr[-3000:]}"


if not RUN_KERNELS:
    # The kernel tests run in the subprocess of test_interpreter_suite: remove them here rather than list dozens of
    # skips (the tests above that need no kernels stay).
    _KERNEL_FREE = {"test_importing_fastweights_does_not_import_triton",
                    "test_explicit_triton_on_cpu_tensors_is_refused", "test_interpreter_suite"}
    for _name in [n for n in globals() if n.startswith("test_") and n not in _KERNEL_FREE]:
        del globals()[_name]
