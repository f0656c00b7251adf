"""The console command and the quickstart demo."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import fastweights
from fastweights.cli import main
from fastweights.train.demo import delayed_recall_batch, run_demo


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert fastweights.__version__ in capsys.readouterr().out


def test_info_lists_models_and_kernels(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("linear_transformer", "delta_net", "delta_mlp", "delta_delta_net", "delta_rnn", "delta_lstm",
                 "rdn", "transformer", "lstm"):
        assert f"  {name}\n" in out
    for op in ("sum_rule", "delta_rule", "delta_rnn", "delta_lstm", "rec_delta"):
        assert op in out
    assert "chunked" in out and "checkpointed" in out and "reference" in out


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastweights.cli", "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == f"fastweights {fastweights.__version__}"


def test_delayed_recall_targets():
    import torch

    tokens, targets = delayed_recall_batch(4, 10, 5, 3, torch.Generator().manual_seed(0))
    assert (targets[:, :3] == -1).all()
    assert (targets[:, 3:] == tokens[:, :-3]).all()


def test_demo_loss_falls(capsys):
    losses = run_demo(steps=60, log_every=20, batch=16, length=24)
    assert len(losses) == 4
    assert losses[-1] < 0.85 * losses[0], losses
    assert "loss" in capsys.readouterr().out


def test_demo_ends_with_a_verdict():
    out = subprocess.run([sys.executable, "-m", "fastweights.cli", "demo", "--steps", "30", "--model", "delta_net"],
                         capture_output=True, text=True, check=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    last = out.splitlines()[-1]
    m = re.fullmatch(r"(solved|not solved): accuracy (\d\.\d{3}) on [\d,]+ new tokens \(chance 0\.125; solved means "
                     r">= 0\.9\) after 30 steps of delta_net, \S+(; more steps may solve it \(--steps 60\))?", last)
    assert m, last
    assert (m.group(1) == "solved") == (float(m.group(2)) >= 0.9) == (m.group(3) is None)


def test_memory_command_reports_both_paths(capsys):
    from fastweights.bench.memory import main as memory_main

    assert memory_main(["--op", "delta_rule", "--batch", "1", "--time", "40", "--heads", "1", "--dim", "4",
                        "--json"]) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    assert [r["impl"] for r in rows] == ["auto", "reference"]
    assert all(r["saved_bytes"] > 0 for r in rows)


def test_memory_subcommand_passes_its_options_through(capsys):
    assert main(["memory", "--op", "sum_rule", "--batch", "1", "--time", "8", "--heads", "1", "--dim", "2",
                 "--impls", "auto"]) == 0
    assert "sum_rule forward+backward" in capsys.readouterr().out


def test_resume_refuses_new_options(tmp_path, capsys):
    assert main(["train", "code-exec", "--resume", str(tmp_path), "lr=0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastweights: error: resume: a resumed run keeps its config.json; remove lr=0.1")
    assert len(err.strip().splitlines()) == 1
