"""`fastweights train rl` / `eval` wiring: dry run, argument errors, a tiny run evaluated from the CLI."""

from __future__ import annotations

import json

import pytest

from fastweights.cli import main


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_dry_run_prints_parameters(capsys):
    rc, out, _ = cli(capsys, "train", "rl", "--env", "repeat_first", "--model", "delta_net", "--dry-run")
    assert rc == 0
    assert "parameters: " in out and "environment: observation" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["train", "rl", "--model", "lstm"], "--env: rl needs an environment"),
    (["train", "rl", "--env", "repeat_first", "--model", "lstm", "--depth", "10"], "--depth: not for rl"),
    (["train", "code-exec", "--env", "repeat_first", "--model", "lstm"], "--env: only for rl"),
    (["train", "lm", "--env", "repeat_first", "--model", "lstm"], "--env: not for lm"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    rc, _, err = cli(capsys, *argv)
    assert rc == 2
    assert message in err


def test_tiny_run_then_eval(capsys, tmp_path):
    run = tmp_path / "run"
    rc, _, _ = cli(capsys, "train", "rl", "--env", "repeat_first", "--model", "lstm", "--run-dir", run,
                   "total_steps=640", "num_envs=8", "unroll_length=10", "log_every_s=1000", "eval_runs=1",
                   "eval_episodes=4")
    assert rc == 0 and (run / "last.pt").is_file()
    rc, out, _ = cli(capsys, "eval", run, "--episodes", "3", "--runs", "2")
    assert rc == 0
    metrics = json.loads(out)
    assert isinstance(metrics, dict) and metrics
    rc, _, err = cli(capsys, "eval", run, "--mode", "carry")
    assert rc == 2 and "--mode: only for language-model runs" in err
