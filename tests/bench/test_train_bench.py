"""The training-step benchmark's plumbing at tiny shapes (no timing is asserted: the machine is shared)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import subprocess
import sys

import pytest
import torch

from fastweights.bench import ops_bench, train_bench
from fastweights.bench.train_bench import TRAIN_SHAPES, TrainShape
from fastweights.ops import available_implementations
from fastweights.runs.config import preset_path

# the preset's models on a few tokens (the LM with one layer and a small vocabulary that still has a cutoff)
TINY = {"tiny": TrainShape("code-exec", batch=2, seq_len=12),
        "tiny-lm": TrainShape("lm", batch=2, seq_len=12, vocab_size=2100, overrides=("num_layers=1",))}
MODELS = ["lstm", "delta_net", "delta_rnn"]  # the transformer is added by the benchmark itself
ROUNDS = 2
QUICK = ["--rounds", str(ROUNDS), "--min-time", "0", "--load-sample", "0.05"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "train.json"
    threads = torch.get_num_threads()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert train_bench.main([*QUICK, "--models", ",".join(MODELS), "--json", str(path)], shapes=TINY) == 0
    assert torch.get_num_threads() == threads  # --threads does not leak out of main()
    return {**json.loads(path.read_text()), "_stdout": stdout.getvalue()}


def test_structure(report):
    for key in ("date", "machine", "fastweights", "torch", "numba", "threads", "load", "settings", "implementations",
                "matmul_peak", "results", "notes"):
        assert key in report
    assert report["threads"] == 1  # the default
    assert report["torch"] == torch.__version__
    assert {"before", "during", "after"} <= set(report["load"])
    assert report["settings"]["models"] == ["transformer", *MODELS]
    assert report["settings"]["rounds"] == ROUNDS and report["settings"]["dropout"] == 0.0
    assert [(r["shape_name"], r["model"]) for r in report["results"]] == [
        (s, m) for s in TINY for m in ["transformer", *MODELS]]
    for r in report["results"]:
        assert len(r["step_s"]) == ROUNDS and all(t > 0 for t in r["step_s"])
        assert (r["batch"], r["seq_len"]) == (2, 12) and r["tokens_per_step"] == 24
        assert r["config"]["dropout"] == 0.0 and r["parameters"] > 0
        for op, names in r["profile"]["implementations"].items():
            assert set(names) <= set(available_implementations()[op])
    lm = [r for r in report["results"] if r["shape_name"] == "tiny-lm"]
    assert all(r["config"]["softmax"] == "adaptive" and r["config"]["num_layers"] == 1 for r in lm)


def test_ratios_come_from_the_measured_times(report):
    for r in report["results"]:
        base = next(b for b in report["results"] if b["shape_name"] == r["shape_name"] and b["model"] == "transformer")
        d = r["derived"]
        assert d["best_step_s"] == min(r["step_s"])
        assert math.isclose(d["ms_per_step"], 1e3 * min(r["step_s"]))
        assert math.isclose(d["tokens_per_s"], r["tokens_per_step"] / min(r["step_s"]))
        assert math.isclose(d["ratio_to_transformer"], min(r["step_s"]) / min(base["step_s"]))
        assert d["ratio_to_transformer_rounds"] == pytest.approx([a / b for a, b in zip(r["step_s"], base["step_s"])])
    assert all(r["derived"]["ratio_to_transformer"] == 1.0 for r in report["results"] if r["model"] == "transformer")


def test_op_share(report):
    for r in report["results"]:
        share = r["derived"]["op_share"]
        assert 0 <= share <= 1 and share == r["profile"]["share"]
        if r["model"] in ("lstm", "transformer"):
            assert share == 0 and r["profile"]["implementations"] == {} and r["profile"]["op_events_s"] == {}
        else:
            assert share > 0, r["model"]
            assert r["profile"]["op_s_per_step"] <= r["profile"]["profiled_step_s"]
    ops = {r["model"]: set(r["profile"]["implementations"]) for r in report["results"]}
    assert "delta_rule" in ops["delta_net"] and "delta_rnn" in ops["delta_rnn"]


def test_table(report):
    out = report["_stdout"]
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("shape"))
    for column in ("model", "B x T", "ms/step", "tokens/s", "x transformer", "fw ops", "implementations"):
        assert column in head
    assert "load: CPUs busy" in out and f"min over {ROUNDS} rounds" in out
    for r in report["results"]:
        d = r["derived"]
        row = next(line for line in lines if line.split()[:2] == [r["shape_name"], r["model"]])
        assert f"{d['ratio_to_transformer']:.2f}" in row.split()
        assert f"{100 * d['op_share']:.0f}%" in row.split()


def test_shapes_read_the_presets():
    code = json.loads(preset_path("code-exec", "cpu").read_text())
    case = train_bench.build_case("lstm", "code-exec", TRAIN_SHAPES["code-exec"])
    assert (case.batch, case.seq_len) == (code["batch_size"], 64)
    assert {k: case.config[k] for k in ("d_model", "num_layers", "num_heads", "head_dim")} == {
        k: code[k] for k in ("d_model", "num_layers", "num_heads", "head_dim")}
    assert (case.config["vocab_size"], case.config["num_classes"]) == (22, 26)  # 3 variables
    long = train_bench.build_case("lstm", "code-exec-long", TRAIN_SHAPES["code-exec-long"])
    assert (long.batch, long.seq_len) == (8, 1024) and long.parameters == case.parameters
    lm = json.loads(preset_path("lm", "cpu").read_text())
    # a vocabulary of the same cutoffs instead of the corpus (loading it takes seconds)
    case = train_bench.build_case("delta_net", "lm", dataclasses.replace(TRAIN_SHAPES["lm"], vocab_size=12000))
    assert (case.batch, case.seq_len) == (lm["batch_size"], lm["tgt_len"])
    for key in ("d_model", "num_layers", "num_heads", "head_dim", "d_ff", "grad_norm_clip", "lr"):
        assert case.config[key] == lm[key], key
    assert case.config["dropout"] == 0.0 and case.config["softmax"] == "adaptive"
    assert case.config["cutoffs"] == lm["cutoffs"]


@pytest.mark.parametrize("argv, flag, given", [
    (["--models", "delta_net,nope"], "--models", "'nope'"),
    (["--shapes", "code-exec,huge"], "--shapes", "'huge'"),
])
def test_unknown_names_are_refused_in_one_line(argv, flag, given, capsys):
    with pytest.raises(SystemExit) as e:
        ops_bench.main(["--train", *argv])  # through the hook of `fastweights bench`
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert flag in err and given in err
    allowed = "'delta_lstm'" if flag == "--models" else "'code-exec-long'"
    assert allowed in err


def test_op_event_names():
    functions = train_bench.fast_weight_functions()
    assert {"ChunkedLinearRecurrence", "ChunkedLinearRecurrenceBackward"} <= functions
    for name in ("fastweights.delta_rule", "fastweights::delta_rnn_recurrence", "ChunkedLinearRecurrence",
                 "autograd::engine::evaluate_function: ChunkedLinearRecurrenceBackward",
                 "GeneratedBackwardFor_fastweights_delta_rnn_recurrence_defaultBackward"):
        assert train_bench.is_op_event(name, functions), name
    for name in ("aten::mm", "AddmmBackward0", train_bench.STEP_EVENT, "Optimizer.step#Adam.step"):
        assert not train_bench.is_op_event(name, functions), name


def test_module_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "fastweights.bench", "--train", "--help"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "fastweights bench --train" in out and "--models" in out and "code-exec-long" in out
