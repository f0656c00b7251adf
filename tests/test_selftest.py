"""``fastweights selftest`` on the CPU: the correctness table of the CPU implementations against the float64
reference, its exit status, a broken implementation named in the output, ``--json`` and ``--speed``.

On a GPU the command checks the Triton kernels the same way (``fastweights selftest --device cuda``)."""

from __future__ import annotations

import json

import pytest
import torch

from fastweights import selftest
from fastweights.cli import main as cli_main
from fastweights.ops.common import registry as _registry
from fastweights.ops.triton import safety


@pytest.fixture(autouse=True)
def _threads_restored():
    n = torch.get_num_threads()
    yield
    assert torch.get_num_threads() == n  # the command restores what it changes


def test_default_run_on_the_cpu_passes_and_prints_the_table(tmp_path, capsys):
    path = tmp_path / "selftest.json"
    assert selftest.main(["--device", "cpu", "--json", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("selftest: no CUDA device") and "against the float64 reference" in out[0]
    assert out[-1].startswith("selftest: all ") and "checks passed" in out[-1]
    saved = json.loads(path.read_text())
    assert saved["schema"] == "fastweights.selftest/1" and saved["all_pass"] and saved["failed"] == []
    rows = saved["rows"]
    assert {r["op"] for r in rows} == set(selftest.SPECS)  # every op
    assert {r["version"] for r in rows if r["op"] == "delta_lstm"} == {1, 2, 3, 4}  # every version
    assert {"chunked", "checkpointed"} <= {r["impl"] for r in rows} and "reference" not in {r["impl"] for r in rows}
    for r in rows:
        if r["status"] == "skipped":
            continue
        assert r["status"] == "PASS" and r["dtype"] == "float32" and r["max_err"] <= r["tol"] == 1e-3
        assert f"{r['name']:<15}{r['impl']:<14}float32" in "\n".join(out)
    lstm = next(r for r in rows if r["op"] == "delta_lstm" and r["impl"] == "checkpointed")
    assert {"output", "final state.c", "grad rbeta", "grad initial_state.R"} <= set(lstm["errors"])
    assert saved["settings"]["shape"] == list(selftest.CHECK_SHAPES["cpu"])


def test_a_broken_implementation_fails_and_is_named(monkeypatch, capsys, tmp_path):
    seen = []
    chunked = _registry.IMPLEMENTATIONS["delta_rule"]["chunked"]
    good = chunked.fn

    def broken(*args, **kwargs):
        seen.append(safety.triton_check_enabled())
        o, s = good(*args, **kwargs)
        return o * 1.05, s

    monkeypatch.setattr(chunked, "fn", broken)
    path = tmp_path / "r.json"
    assert cli_main(["selftest", "--device", "cpu", "--ops", "delta_rule,sum_rule", "--json", str(path)]) == 1
    out = capsys.readouterr().out
    assert "selftest: 1 of " in out and "checks FAILED: delta_rule chunked float32" in out
    line = next(x for x in out.splitlines() if x.startswith("delta_rule     chunked"))
    assert "FAIL" in line and "5.0e-02" in line
    assert seen and not any(seen)  # the first-use check is off while the selftest runs
    assert safety.triton_check_enabled()  # and back on afterwards
    saved = json.loads(path.read_text())
    assert not saved["all_pass"] and saved["failed"] == ["delta_rule chunked float32"]
    assert all(r["pass"] for r in saved["rows"] if r["op"] == "sum_rule")


def test_a_raising_implementation_is_an_error(monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("kernel\n launch failed")

    monkeypatch.setattr(_registry.IMPLEMENTATIONS["sum_rule"]["chunked"], "fn", boom)
    assert selftest.main(["--device", "cpu", "--ops", "sum_rule"]) == 1
    out = capsys.readouterr().out
    assert "sum_rule chunked float32: RuntimeError: kernel launch failed" in out
    assert "checks FAILED: sum_rule chunked float32" in out


def test_speed_on_the_cpu(tmp_path, capsys):
    path = tmp_path / "s.json"
    assert selftest.main(["--device", "cpu", "--ops", "delta_rnn", "--dtypes", "float32,bf16", "--shape", "1x20x1x4",
                          "--speed", "--speed-shape", "1x8x1x4", "--reps", "1", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "times: minimum over repeats" in out
    rows = [r for r in json.loads(path.read_text())["rows"] if r["status"] != "skipped"]
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"} and {r["version"] for r in rows} == {1, 2}
    for r in rows:
        s = r["speed"]
        assert s["pytorch_impl"] == "checkpointed" and s["shape"] == {"B": 1, "T": 8, "H": 1, "D": 4}
        assert s["impl"]["fwd_bwd_ms"] > 0 and s["pytorch"]["fwd_ms"] > 0 and s["speedup_fwd_bwd"] > 0
        assert r["tol"] in (1e-3, 1e-2, 2e-2)
    assert any(r["tol"] == 2e-2 or r["tol"] == 1e-2 for r in rows if r["dtype"] == "bfloat16")


@pytest.mark.parametrize(("argv", "message"), [
    (["--dtypes", "float8"], "--dtypes: expected a comma-separated subset of float32, bfloat16, float16, got 'float8'"),
    (["--shape", "2x3"], "--shape: expected B x T x H x D as four positive integers like 2x40x2x16, got '2x3'"),
    (["--ops", "delta_net"], "--ops: expected a comma-separated subset of"),
    (["--device", "tpu"], "--device: expected cuda, cuda:N or cpu, got 'tpu'"),
])
def test_bad_arguments_name_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        selftest.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_without_a_gpu_cuda_falls_back_to_the_cpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert selftest.main(["--device", "cuda", "--ops", "sum_rule"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("selftest: no CUDA device: checking the CPU implementations (")
    assert "the Triton kernels need a CUDA GPU" in out[0]


def test_which_implementations_are_checked(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [n for n, _ in selftest.implementations("delta_rnn", cuda)] == ["triton"]
    assert [n for n, _ in selftest.implementations("delta_delta", cuda)] == ["triton"]  # passed to the delta rule
    names = [n for n, _ in selftest.implementations("delta_rnn", cpu)]
    assert "checkpointed" in names and "triton" not in names and "reference" not in names
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert [n for n, _ in selftest.implementations("delta_rnn", cpu)][-1] == "triton"
    assert selftest.pytorch_impl("delta_rule", cuda) == "chunked"
    assert selftest.pytorch_impl("delta_lstm", cuda) == "checkpointed"
    assert selftest.pytorch_impl("delta_mlp", cpu) == "chunked"
