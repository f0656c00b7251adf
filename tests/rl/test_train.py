"""The RL learning loop: run directory, exact resume, evaluation protocol, presets, entry points, bad inputs, and a
CI-sized learning test (a fast-weight core solves a memory task that the feed-forward agent cannot)."""

from __future__ import annotations

import csv
import importlib.util
import signal

import pytest
import torch

from fastweights.rl import RLConfig, evaluate_run, main_train, resolve_rl_config, train
from fastweights.rl.config import rl_config_from_dict, rl_config_to_dict
from fastweights.train.config import ConfigError
from fastweights.train.interrupt import Interrupted
from fastweights.train.runs import read_json

TINY = ["env=repeat_previous", "env_options={\"length\": 6, \"delay\": 1}", "num_envs=4", "unroll_length=5",
        "total_steps=120", "log_every=2", "checkpoint_every=2", "torso_dim=8", "d_model=8", "num_heads=2", "d_ff=16",
        "lstm_hidden=8", "eval_episodes=4", "eval_runs=2", "eval_envs=2", "threads=1"]


def tiny_config(model: str = "delta_net", *extra: str) -> RLConfig:
    return resolve_rl_config(model=model, overrides=[*TINY, *extra])


def metric_rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:  # wall-clock columns differ between runs
        r.pop("steps_per_s")
        r.pop("elapsed_s")
    return rows


@pytest.mark.parametrize("model", ["delta_net", "lstm"])
def test_resume_continues_exactly(tmp_path, model):
    extra = ("prev_action=true", "extra_checkpoints=40")
    straight = train(tiny_config(model, *extra), tmp_path / "a", quiet=True)
    part = train(tiny_config(model, *extra), tmp_path / "b", quiet=True, stop_after_updates=3)
    assert part["updates"] == 3 and "eval" not in part and not (tmp_path / "b" / "results.json").exists()
    # an extra checkpoint written before the interruption must not be overwritten on resume
    before = torch.load(tmp_path / "b" / "step-40.pt", weights_only=False)["agent"]
    resumed = train(tiny_config(model, *extra), tmp_path / "b", resume=True, quiet=True)
    kept = torch.load(tmp_path / "b" / "step-40.pt", weights_only=False)["agent"]
    assert all(torch.equal(before[k], kept[k]) for k in before)
    assert resumed["updates"] == straight["updates"] == 6
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["agent"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["agent"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert metric_rows(tmp_path / "a") == metric_rows(tmp_path / "b")
    assert straight["eval"] == resumed["eval"]


def test_signal_finishes_the_update_then_saves(tmp_path, monkeypatch):
    """SIGTERM inside update 3 (checkpoints every 2): the update is finished, a checkpoint written at update 3,
    and the resumed run equals the uninterrupted one."""
    rl_train = importlib.import_module("fastweights.rl.train")  # the module (fastweights.rl.train is the function)
    straight = train(tiny_config("delta_net"), tmp_path / "a", quiet=True)
    real, calls = rl_train.learner_loss, [0]

    def loss_then_signal(*args):
        calls[0] += 1
        if calls[0] == 3:
            signal.raise_signal(signal.SIGTERM)
        return real(*args)

    monkeypatch.setattr(rl_train, "learner_loss", loss_then_signal)
    run_dir = tmp_path / "b"
    with pytest.raises(Interrupted) as exc:
        train(tiny_config("delta_net"), run_dir, quiet=True)
    monkeypatch.undo()
    assert str(exc.value) == (f"interrupted (SIGTERM) at update 3/6: saved {run_dir / 'last.pt'}; resume with: "
                              f"fastweights train rl --resume {run_dir}")
    assert torch.load(run_dir / "last.pt", weights_only=False)["update"] == 3
    resumed = train(tiny_config("delta_net"), run_dir, resume=True, quiet=True)
    assert metric_rows(tmp_path / "a") == metric_rows(run_dir) and straight["eval"] == resumed["eval"]


def test_run_directory_contents(tmp_path):
    res = train(tiny_config("rdn", "cut_state_grad_every_step=true", "extra_checkpoints=40,100"), tmp_path / "r",
                quiet=True)
    run = tmp_path / "r"
    for name in ("config.json", "meta.json", "metrics.csv", "last.pt", "results.json", "step-40.pt", "step-100.pt"):
        assert (run / name).is_file(), name
    cfg = read_json(run / "config.json")
    assert cfg["task"] == "rl" and cfg["model"] == "rdn" and cfg["cut_state_grad_every_step"] is True
    meta = read_json(run / "meta.json")
    assert meta["obs_shape"] == [5] and meta["num_actions"] == 4 and meta["parameters"] == res["parameters"]
    rows = metric_rows(run)
    assert [int(r["step"]) for r in rows] == [40, 80, 120]
    assert {"episode_return", "loss", "pg_loss", "baseline_loss", "entropy_loss", "grad_norm", "lr"} <= set(rows[0])
    assert float(rows[0]["lr"]) > float(rows[-1]["lr"]) > 0  # linear decay
    results = read_json(run / "results.json")
    assert set(results["eval"]) >= {"mean", "std", "run_means"} and len(results["eval"]["run_means"]) == 2
    with pytest.raises(FileExistsError, match="already holds a run"):
        train(tiny_config("rdn"), run, quiet=True)


def test_evaluate_run_protocol(tmp_path):
    train(tiny_config("lstm"), tmp_path / "r", quiet=True, evaluate_at_end=False)
    out = evaluate_run(tmp_path / "r", episodes=6, runs=3, greedy=True, num_envs=4)
    assert out["runs"] == 3 and out["episodes"] == 6 and len(out["run_means"]) == 3 and out["step"] == 120
    assert 0.0 <= out["mean"] <= 1.0 and out["std"] >= 0.0
    assert out == evaluate_run(tmp_path / "r", episodes=6, runs=3, greedy=True, num_envs=4)  # seeded
    sampled = evaluate_run(tmp_path / "r", episodes=6, runs=1, greedy=False)
    assert sampled["greedy"] is False
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        evaluate_run(tmp_path / "nope")
    with pytest.raises(ValueError, match="episodes"):
        evaluate_run(tmp_path / "r", episodes=0)


def test_presets_and_round_trip():
    paper = resolve_rl_config(preset="paper")
    assert (paper.num_envs, paper.unroll_length, paper.total_steps) == (32, 50, 200_000_000)
    assert (paper.lr, paper.rms_alpha, paper.rms_eps, paper.rms_momentum) == (6e-4, 0.99, 0.01, 0.0)
    assert (paper.discount, paper.baseline_cost, paper.entropy_cost, paper.grad_norm_clip) == (0.99, 0.5, 0.01, 40.0)
    assert paper.extra_checkpoints == [50_000_000] and paper.env == "BreakoutNoFrameskip-v4"
    cpu = resolve_rl_config(model="rdn", preset="cpu", overrides=["seed=3"])
    assert cpu.env == "repeat_first" and cpu.model == "rdn" and cpu.seed == 3
    assert rl_config_from_dict(rl_config_to_dict(cpu)) == cpu
    assert cpu.env_options == {"num_symbols": 4, "length": 10}
    assert resolve_rl_config(env="count_recall", preset="cpu").env_options == {}  # another env: not its options
    kept = resolve_rl_config(env="repeat_previous", preset="cpu", overrides=["env_options={\"delay\": 2}"])
    assert kept.env_options == {"delay": 2}


def test_main_train_dry_run_and_resume_rules(tmp_path):
    out = main_train("repeat_first", "delta_rnn", "cpu", ["seed=2"], dry_run=True)
    assert out["obs_shape"] == [5] and out["num_actions"] == 4 and out["parameters"] > 0
    assert out["config"]["model"] == "delta_rnn"
    res = main_train(None, "feedforward", None, TINY, run_dir=tmp_path / "r")
    assert res["updates"] == 6
    with pytest.raises(ConfigError, match=r"keeps its config\.json"):
        main_train(None, "lstm", None, [], resume=tmp_path / "r")
    with pytest.raises(FileNotFoundError, match=r"not a run directory \(no config\.json\)"):
        main_train(resume=tmp_path / "missing")


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["model=transformer"], "model: expected one of"),
    (["discount=2"], "discount"),
    (["num_envs=0"], "num_envs"),
    (["colour=red"], "unknown key"),
    (["lr=0"], "lr"),
    (["layer_options={\"bogus\": 1}"], "bogus"),
    (["extra_checkpoints=0"], "extra_checkpoints"),
    (["device=tpu"], "device"),
])
def test_bad_config(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        resolve_rl_config(overrides=overrides)


def test_unknown_env_fails_on_build(tmp_path):
    with pytest.raises(ValueError, match="unknown environment"):
        train(tiny_config("lstm", "env=nowhere"), tmp_path / "r", quiet=True)


def test_learning_memory_task(tmp_path):
    """RepeatFirst (4 symbols, 10 steps): the best memoryless policy earns 0.325, a policy with memory 1.0.
    ~200 updates of 32 x 20 steps; about 20 s on one idle core."""
    budget = ["total_steps=128000", "eval_episodes=100", "eval_runs=2", "log_every=50"]
    fast = main_train("repeat_first", "delta_net", "cpu", budget, run_dir=tmp_path / "delta_net")
    memoryless = main_train("repeat_first", "feedforward", "cpu", budget, run_dir=tmp_path / "ff")
    assert fast["eval"]["mean"] > 0.9, fast
    assert memoryless["eval"]["mean"] < 0.4, memoryless


@pytest.mark.skipif(not (importlib.util.find_spec("ale_py") and importlib.util.find_spec("gymnasium")),
                    reason="Atari needs gymnasium and ale-py (pip install 'fastweights[rl]')")
def test_atari_smoke_and_resume(tmp_path):
    """Two updates on Breakout with the paper's torso; the Atari env cannot be snapshot, so resume restarts it."""
    over = ["env=BreakoutNoFrameskip-v4", "env_options={\"num_threads\": 1}", "num_envs=2", "unroll_length=4",
            "total_steps=16", "log_every=1", "checkpoint_every=1", "d_model=16", "num_heads=2", "d_ff=32",
            "eval_episodes=1", "eval_runs=1", "eval_envs=1", "threads=1"]
    part = main_train(None, "delta_net", "paper", over, run_dir=tmp_path / "r")  # 2 updates, then evaluation
    assert part["updates"] == 2 and part["parameters"] > 1_000_000
    meta = read_json(tmp_path / "r" / "meta.json")
    assert meta["obs_shape"] == [4, 84, 84] and meta["num_actions"] == 4
    cfg = rl_config_from_dict(read_json(tmp_path / "r" / "config.json"))
    cfg.total_steps = 24
    more = train(cfg, tmp_path / "r", resume=True, quiet=True, evaluate_at_end=False)
    assert more["updates"] == 3
