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
    (["train", "rl", "--env", "repeat_first", "--model", "lstm", "--depth", "10"],
     "--depth: only for listops, not for rl"),
    (["train", "code-exec", "--env", "repeat_first", "--model", "lstm"], "--env: only for rl"),
    (["train", "lm", "--env", "repeat_first", "--model", "lstm"], "--env: only for rl, not for lm"),
    (["compare", "rl", "--env", "repeat_first", "--depth", "10"], "--depth: only for listops, not for rl"),
    (["compare", "listops", "--env", "repeat_first"], "--env: only for rl, not for listops"),
    (["compare", "rl", "task=lm"], "task=lm: not for rl"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, message):
    rc, _, err = cli(capsys, *argv)
    assert rc == 2
    assert message in err


def test_the_presets_environment_without_env(capsys, tmp_path):
    """docs/rl.md's command: no --env, no --preset: the cpu preset and its environment (repeat_first with its
    options); --env naming another environment replaces it."""
    rc, out, err = cli(capsys, "train", "rl", "--model", "feedforward", "--dry-run")
    assert rc == 0, err
    cfg = json.loads(out.rsplit("\n", 3)[0])
    assert cfg["env"] == "repeat_first" and cfg["env_options"] == {"num_symbols": 4, "length": 10}
    assert cfg["total_steps"] == 320000  # the cpu preset
    rc, out, err = cli(capsys, "train", "rl", "--env", "count_recall", "--model", "lstm", "--dry-run")
    assert rc == 0, err
    assert json.loads(out.rsplit("\n", 3)[0])["env"] == "count_recall"


def test_tiny_run_then_eval(capsys, tmp_path):
    run = tmp_path / "run"
    rc, out, _ = cli(capsys, "train", "rl", "--model", "lstm", "--run-dir", run, "total_steps=640", "num_envs=8",
                     "unroll_length=10", "log_every_s=1000", "eval_runs=1", "eval_episodes=4",
                     "extra_checkpoints=320")
    assert rc == 0 and (run / "last.pt").is_file()
    assert out.startswith("preset: cpu (the default") and "rl repeat_first lstm:" in out
    assert f"run dir {run}\n" in out and "done: return" in out
    rc, out, _ = cli(capsys, "eval", run, "--episodes", "3", "--runs", "2")
    assert rc == 0
    metrics = json.loads(out)
    assert metrics["checkpoint"] == "last" and metrics["runs"] == 2 and metrics["episodes"] == 3
    rc, out, _ = cli(capsys, "eval", run, "--episodes", "3", "--runs", "1", "--checkpoint", "step-320")
    assert rc == 0 and json.loads(out)["step"] == 320
    for argv, message in ((["--mode", "carry"], "--mode: only for lm runs"),
                          (["--split", "valid"], "--split: "),
                          (["--checkpoint", "best"], "--checkpoint: "),
                          (["--checkpoint", "step-7"], "--checkpoint: "),
                          (["--episodes", "0"], "episodes: expected a positive int"),  # not read as "not given"
                          (["--runs", "0"], "runs: expected a positive int")):
        rc, _, err = cli(capsys, "eval", run, *argv)
        assert rc == 2 and err.startswith(f"fastweights: error: {message}") and err.count("\n") == 1, err
    rc, _, err = cli(capsys, "eval", run, "--checkpoint", "best")
    assert "keeps ['last', 'step-320'] (no best" in err
