"""The speed benchmark's plumbing on the tiny shape (no timing is asserted: the machine is shared)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess

import pytest
import torch

from fastweights.bench import ops_bench
from fastweights.ops import available_implementations

# one thread and one call per repeat: fast and steady on a loaded 2-core machine
QUICK = ["--shapes", "tiny", "--repeat", "1", "--min-time", "0", "--threads", "1", "--load-sample", "0.05"]


def _numbers(x, path=""):
    """Every (path, number) inside a JSON value (bools are not numbers here)."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, x


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    threads = torch.get_num_threads()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert ops_bench.main([*QUICK, "--no-memory", "--json", str(path)]) == 0
    assert torch.get_num_threads() == threads  # --threads does not leak out of main()
    return {**json.loads(path.read_text()), "_stdout": stdout.getvalue()}


def test_structure(report):
    for key in ("date", "machine", "torch", "numba", "threads", "load", "settings", "implementations",
                "matmul_peak", "results", "notes"):
        assert key in report
    assert {"platform", "cpu_model", "cores"} <= set(report["machine"])
    assert report["threads"] == 1
    assert report["torch"] == torch.__version__
    cases = {(c["kind"], c["name"]) for c in report["results"]}
    assert cases == {("op", op) for op in ops_bench.OPS} | {("layer", name) for name in ops_bench.LAYER_OPS}
    assert {"square_256", "head_16"} <= set(report["matmul_peak"])
    for c in report["results"]:
        assert c["shape"] == {"B": 2, "T": 64, "H": 2, "D": 16}
        assert c["naive"]["impl"] == "reference" and c["naive"]["skipped"] is None
        assert c["default"]["impl"] in available_implementations()[c["op"]]
        for side in ("naive", "default"):
            assert len(c[side]["forward_s"]) == len(c[side]["forward_backward_s"]) == 1
            assert c[side]["memory"] is None
        assert c["max_abs_diff_forward"] < 1e-3  # the two sides compute the same thing


def test_numbers_finite_and_positive(report):
    for path, x in _numbers({k: v for k, v in report.items() if k != "_stdout"}):
        assert math.isfinite(x), path
        if path.startswith(".settings") or "load" in path or "max_abs_diff" in path:
            assert x >= 0, path
        else:
            assert x > 0, path


def test_derived_columns(report):
    peak_256 = report["matmul_peak"]["square_256"]["gflops_max"]
    assert peak_256 == max(max(r["gflops"]) for r in report["matmul_peak"]["square_256"]["runs"])
    for c in report["results"]:
        d = c["derived"]
        best = {side: {w: min(c[side][f"{w}_s"]) for w in ("forward", "forward_backward")}
                for side in ("naive", "default")}
        assert d["speedup_forward"] == pytest.approx(best["naive"]["forward"] / best["default"]["forward"])
        assert d["speedup_forward_backward"] == pytest.approx(
            best["naive"]["forward_backward"] / best["default"]["forward_backward"])
        assert c["flops"]["forward_backward"] == 3 * c["flops"]["forward"]
        for side in ("naive", "default"):
            for w in ("forward", "forward_backward"):
                assert d["efficiency"][side][w] == pytest.approx(c["flops"][w] / (peak_256 * 1e9 * best[side][w]))
        assert d["peak_gflops_256"] == peak_256
        assert d["peak_gflops_head"] == report["matmul_peak"]["head_16"]["gflops_max"]
        assert d["memory_ratio_saved"] is None


def test_flop_model():
    B, T, H, D = 2, 64, 2, 16
    assert ops_bench.op_flops("delta_rule", B, T, H, D) == 6 * D * D * B * T * H
    assert ops_bench.op_flops("sum_rule", B, T, H, D) == 4 * D * D * B * T * H
    assert ops_bench.op_flops("delta_lstm", B, T, H, D) == 3 * ops_bench.op_flops("delta_rnn", B, T, H, D)
    with pytest.raises(ValueError, match="no FLOP model"):
        ops_bench.step_flops("delta_mlp", D, D)


def test_layer_flops_add_projections(report):
    by = {(c["kind"], c["name"]): c for c in report["results"]}
    layer, op = by[("layer", "delta_net")], by[("op", "delta_rule")]
    H, D, tokens = 2, 16, 2 * 64
    C = H * D
    slow, out = C * H * (3 * D + 1), H * D * C  # delta_net projects to q, k, v (D each) and beta (1) per head
    assert layer["flops"]["forward"] - op["flops"]["forward"] == 2 * tokens * (slow + out)


def test_load_fields(report):
    load = report["load"]
    for when in ("before", "after"):
        assert 0 <= load[when]["busy_fraction"] <= 1
        assert load[when]["sample_seconds"] > 0
        assert len(load[when]["loadavg"]) == 3
    assert 0 <= load["during"]["busy_fraction"] <= 1 and load["during"]["seconds"] > 0


def test_table_printed(report):
    out = report["_stdout"]
    assert "GFLOP/s" in out and "load:" in out and "wrote" in out
    rows = [line.split() for line in out.splitlines()]
    for c in report["results"]:  # one table row per case: kind, name, shape, default impl, ...
        assert [c["kind"], c["name"], "tiny", c["default"]["impl"]] in [r[:4] for r in rows]


def test_memory_one_op(tmp_path, monkeypatch):
    monkeypatch.setattr(ops_bench, "PEAK_MIN_BYTES", 0)  # fresh interpreters even at the tiny shape
    path = tmp_path / "m.json"
    # a parent larger than the children: ru_maxrss is inherited through fork+exec and used to hide the
    # children's peaks (every peak read 0 inside the benchmark)
    ballast = torch.ones(2**28)  # 1 GiB, touched
    assert ops_bench.main([*QUICK, "--ops", "delta_rule", "--layers", "none", "--json", str(path)]) == 0
    del ballast
    (case,) = json.loads(path.read_text())["results"]
    mem = {side: case[side]["memory"] for side in ("naive", "default")}
    assert None not in mem.values(), case["notes"]  # a failed subprocess leaves a note saying why
    for m in mem.values():
        assert m["saved_bytes"] > 0 and m["peak_bytes"] > 0
    d = case["derived"]
    assert d["memory_ratio_saved"] == pytest.approx(mem["naive"]["saved_bytes"] / mem["default"]["saved_bytes"])
    assert d["memory_ratio_peak"] == pytest.approx(mem["naive"]["peak_bytes"] / mem["default"]["peak_bytes"])


@pytest.mark.parametrize("shapes, limit, why", [("tiny", "1e-9", "took"),  # T <= prefix: the first full call
                                                ("1x200x1x4", "1e-9", "estimated")])  # T > prefix: the estimate
def test_naive_skipped_over_limit(tmp_path, shapes, limit, why):
    path = tmp_path / "s.json"
    argv = [*QUICK, "--shapes", shapes, "--no-memory", "--ops", "delta_rule", "--layers", "none",
            "--naive-max-seconds", limit, "--json", str(path)]
    assert ops_bench.main(argv) == 0
    (case,) = json.loads(path.read_text())["results"]
    assert why in case["naive"]["skipped"] and case["naive"]["forward_s"] == []
    assert case["derived"]["speedup_forward"] is None and case["default"]["forward_s"]
    assert any("naive skipped" in n for n in case["notes"])


@pytest.mark.parametrize("argv, message", [
    (["--ops", "nope"], "--ops: unknown 'nope'"),
    (["--layers", "transformer"], "--layers: unknown 'transformer'"),
    (["--shapes", "huge"], "--shapes: unknown shape 'huge'"),
    (["--repeat", "0"], "--repeat"),
])
def test_bad_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        ops_bench.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_failed_memory_measurement_becomes_a_note(monkeypatch):
    def killed(*args, **kwargs):
        raise subprocess.CalledProcessError(-9, "python", stderr="Traceback ...\nMemoryError: out of memory")

    monkeypatch.setattr(ops_bench, "run_isolated", killed)
    monkeypatch.setattr(ops_bench, "measures_peak", lambda *shape: True)
    case = {"kind": "op", "name": "sum_rule", "shape": {"B": 1, "T": 4, "H": 1, "D": 4}, "notes": [],
            "naive": {"skipped": None, "memory": None}, "default": {"memory": None}}
    ops_bench.add_memory(case, None)
    assert case["naive"]["memory"] is None and case["default"]["memory"] is None
    assert case["notes"] == [f"memory of {side} failed: MemoryError: out of memory" for side in ("naive", "default")]


def test_small_shapes_measure_saved_bytes_in_process(monkeypatch):
    """No fresh interpreter below PEAK_MIN_BYTES: the saved bytes are exact anyway, the peak would be noise."""
    def no_subprocess(*args, **kwargs):
        raise AssertionError("a fresh interpreter was started")

    monkeypatch.setattr(ops_bench, "run_isolated_layer", no_subprocess)
    assert not ops_bench.measures_peak(*ops_bench.SHAPES["tiny"])
    assert ops_bench.measures_peak(*ops_bench.SHAPES["paper"])
    B, T, H, D = ops_bench.SHAPES["tiny"]
    case = {"kind": "layer", "name": "delta_net", "shape": {"B": B, "T": T, "H": H, "D": D}, "notes": [],
            "naive": {"skipped": None, "memory": None}, "default": {"memory": None}}
    ops_bench.add_memory(case, None)
    naive, default = case["naive"]["memory"], case["default"]["memory"]
    assert naive["peak_bytes"] is None and default["peak_bytes"] is None
    assert naive["saved_bytes"] > default["saved_bytes"] > 0  # the naive loop keeps a state per step
