"""The CPU-side logic of the GPU benchmark (``fastweights.ops.triton.gpu_bench``): a smoke run on the CPU with tiny
shapes, the flash-linear-attention adapters (against a fake ``fla`` package), the targets and the time budget.

The benchmark itself needs a CUDA GPU (``scripts/gpu_check.sh``); here its harness runs the CPU implementations.
"""

from __future__ import annotations

import json
import sys
import time
import types

import pytest
import torch

from fastweights import ops
from fastweights.ops.triton import gpu_bench

TINY = {c.op: c for c in gpu_bench.TINY_CASES}


def _fake_fla(monkeypatch, calls: list):
    """A fake ``fla`` with the signatures of fla-core 0.6.0, computing with our reference implementations."""

    def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False,
                         use_qk_l2norm_in_kernel=False, cu_seqlens=None, **kwargs):
        calls.append(("chunk_delta_rule", scale, kwargs))
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        return ops.delta_rule(q * scale, k, v, beta, impl="reference")[0], None

    def fused_recurrent_delta_rule(q, k, v, beta=None, scale=None, initial_state=None, output_final_state=False,
                                   use_qk_l2norm_in_kernel=False, cu_seqlens=None):
        raise RuntimeError("refuses float32")  # like fla's kernels for some dtypes: reported, not fatal

    def chunk_linear_attn(q, k, v, scale=None, initial_state=None, output_final_state=False, normalize=True,
                          cu_seqlens=None):
        calls.append(("chunk_linear_attn", scale, normalize))
        o = ops.sum_rule(q * (q.shape[-1] ** -0.5 if scale is None else scale), k, v, impl="reference")[0]
        return (o / 2 if normalize else o), None

    mods = {name: types.ModuleType(name) for name in ("fla", "fla.ops", "fla.ops.delta_rule", "fla.ops.linear_attn")}
    mods["fla.ops.delta_rule"].chunk_delta_rule = chunk_delta_rule
    mods["fla.ops.delta_rule"].fused_recurrent_delta_rule = fused_recurrent_delta_rule
    la = mods["fla.ops.linear_attn"]
    la.chunk_linear_attn = la.fused_chunk_linear_attn = la.fused_recurrent_linear_attn = chunk_linear_attn
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setitem(sys.modules, "fla.ops.simple_gla", None)  # absent: an ImportError, silently skipped


def test_fla_adapters_use_our_semantics(monkeypatch):
    calls = []
    _fake_fla(monkeypatch, calls)
    for op in ("delta_rule", "sum_rule"):
        fns, why = gpu_bench.fla_variants(op)
        assert why is None and fns
        args, _, _ = gpu_bench.make_args(TINY[op], "cpu")
        ours = getattr(ops, op)(*args, impl="reference")[0]
        name = f"fla chunk_{'delta_rule' if op == 'delta_rule' else 'linear_attn'}"
        torch.testing.assert_close(fns[name](*args), ours)  # scale 1, no normalisation
    assert ("chunk_delta_rule", 1.0, {}) in calls and ("chunk_linear_attn", 1.0, False) in calls
    assert "fla chunk_simple_gla(g=None)" not in gpu_bench.fla_variants("sum_rule")[0]
    assert gpu_bench.fla_variants("rec_delta") == ({}, None)


def test_fla_missing_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "fla", None)
    monkeypatch.setitem(sys.modules, "fla.ops", None)
    monkeypatch.setitem(sys.modules, "fla.ops.delta_rule", None)
    fns, why = gpu_bench.fla_variants("delta_rule")
    assert fns == {} and why.startswith("fla not importable")


def test_run_case_with_fla_targets_and_numerics(monkeypatch):
    _fake_fla(monkeypatch, [])
    rec = gpu_bench.run_case(TINY["delta_rule"], "cpu", reps=1, deadline=time.perf_counter() + 600, log=lambda m: None)
    args, _, _ = gpu_bench.make_args(TINY["delta_rule"], "cpu")
    assert rec["impl"] == gpu_bench.resolved_impl(TINY["delta_rule"], args) != "triton"  # the CPU default
    assert rec["numerics"]["pass"]
    assert set(rec["numerics"]["err_grads"]) == {"q", "k", "v", "beta"}
    fla = rec["fla"]
    assert fla["fla chunk_delta_rule"]["fwd_bwd_ms"] > 0 and fla["fla chunk_delta_rule"]["err_out"] < 1e-6
    assert "refuses float32" in fla["fla fused_recurrent_delta_rule"]["error"]
    t = rec["targets"]["vs_fla"]
    assert t["fastest"] == "fla chunk_delta_rule" and isinstance(t["met"], bool) and t["target"] == 1.2
    assert rec["naive"]["steps_measured"] == 8 and rec["naive"]["scaled_by"] == 40 / 8
    assert rec["targets"]["vs_naive"]["met"] is None  # the delta rule's target is fla


def test_budget_skips_the_optional_sides(monkeypatch):
    _fake_fla(monkeypatch, [])
    rec = gpu_bench.run_case(TINY["sum_rule"], "cpu", reps=1, deadline=0.0, log=lambda m: None)
    assert rec["naive"] == {"skipped": "time budget"}
    assert all(v == {"skipped": "time budget"} for v in rec["fla"].values())
    assert rec["ours"]["fwd_bwd_ms"] > 0 and rec["targets"] == {}


def test_main_smoke_run_on_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fla", None)
    path = tmp_path / "bench.json"
    res = gpu_bench.main(["--device", "cpu", "--tiny", "--cases", "delta_rule,delta_rnn", "--reps", "1",
                          "--json", str(path)])
    out = capsys.readouterr().out
    saved = json.loads(path.read_text())
    assert saved["schema"] == "fastweights.gpu_bench/1" and saved["info"]["device"] == "cpu"
    assert [c["op"] for c in saved["cases"]] == ["delta_rule", "delta_rnn"]
    assert res["all_numerics_pass"] and saved["all_numerics_pass"]
    rnn = saved["cases"][1]
    assert rnn["version"] == 2 and isinstance(rnn["targets"]["vs_naive"]["met"], bool)
    assert "delta_rnn v2" in out and "naive loop (est. from 8 steps)" in out
    assert out.rstrip().splitlines()[-1].startswith("JSON {")


def test_make_args_shapes():
    for case in gpu_bench.TINY_CASES:
        args, names, n_time = gpu_bench.make_args(case, "cpu")
        assert len(args) == len(names)
        assert all(a.shape[1] == case.T for a in args[:n_time])
        short = gpu_bench.prefix(args, n_time, 3)
        assert all(a.shape[1] == 3 for a in short[:n_time]) and short[n_time:] == args[n_time:]


def test_refuses_cuda_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_bench.main([])
