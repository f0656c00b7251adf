"""The RL learning loop: run directory, exact resume, evaluation protocol, presets, entry points, bad inputs, and a
CI-sized learning test (a fast-weight core solves a memory task that the feed-forward agent cannot)."""

from __future__ import annotations

import csv
import importlib.util
import signal

import numpy as np
import pytest
import torch

from fastweights.fields import ConfigError
from fastweights.layers.base import detach_state
from fastweights.rl import (
    Actor,
    RLConfig,
    evaluate_agent,
    evaluate_run,
    impala_loss,
    learner_loss,
    train,
)
from fastweights.rl.config import rl_config_from_dict, rl_config_to_dict
from fastweights.rl.spec import build
from fastweights.rl.train import load_agent
from fastweights.runs.directory import read_json
from fastweights.runs.interrupt import Interrupted
from fastweights.tasks import resolve_config

TINY = ["env=repeat_previous", "env_options={\"length\": 6, \"delay\": 1}", "num_envs=4", "unroll_length=5",
        "total_steps=120", "log_interval=2", "checkpoint_interval=2", "torso_dim=8", "d_model=8", "num_heads=2",
        "d_ff=16", "lstm_hidden=8", "eval_episodes=4", "eval_runs=2", "eval_envs=2", "threads=1"]


def rl_config(env: str | None = None, model: str | None = None, preset: str | None = None,
              overrides: list[str] | None = None) -> RLConfig:
    return resolve_config("rl", preset, list(overrides or []), env=env, model=model)


def tiny_config(model: str = "delta_net", *extra: str) -> RLConfig:
    return rl_config(model=model, overrides=[*TINY, *extra])


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
    consecutive = evaluate_run(tmp_path / "r", episodes=6, runs=3, mode="consecutive")
    assert consecutive["mode"] == "consecutive" and len(consecutive["run_means"]) == 3
    assert consecutive == evaluate_run(tmp_path / "r", episodes=6, runs=3, mode="consecutive")  # seeded
    with pytest.raises(ValueError, match="mode: expected one of"):
        evaluate_run(tmp_path / "r", mode="sequential")
    cfg, agent = load_agent(tmp_path / "r")
    with pytest.raises(ValueError, match="noneg: the filter restarts Atari games"):
        evaluate_agent(agent, cfg, noneg=True)


def test_presets_and_round_trip():
    paper = rl_config(preset="paper")
    assert (paper.num_envs, paper.unroll_length, paper.total_steps) == (32, 50, 200_000_000)
    assert (paper.lr, paper.rms_alpha, paper.rms_eps, paper.rms_momentum) == (6e-4, 0.99, 0.01, 0.0)
    assert (paper.discount, paper.baseline_cost, paper.entropy_cost, paper.grad_norm_clip) == (0.99, 0.5, 0.01, 40.0)
    assert paper.extra_checkpoints == [50_000_000] and paper.env == "BreakoutNoFrameskip-v4"
    # the official learner and test: no gradient across steps through the state, 5 x 30 consecutive episodes
    assert paper.cut_state_grad_every_step and paper.eval_mode == "consecutive"
    assert (paper.eval_runs, paper.eval_episodes, paper.eval_greedy) == (5, 30, True)
    # the noneg filter: the games the official code applies it to, unless set
    assert not paper.noneg()
    assert rl_config(env="UpNDownNoFrameskip-v4", preset="paper").noneg()
    assert rl_config(env="atari:BattleZone", preset="paper").noneg()
    assert rl_config(env="atari:Breakout", overrides=["eval_noneg=true"]).noneg()
    assert not rl_config(env="atari:BattleZone", overrides=["eval_noneg=false"]).noneg()
    cpu = rl_config(model="rdn", preset="cpu", overrides=["seed=3"])
    assert cpu.env == "repeat_first" and cpu.model == "rdn" and cpu.seed == 3
    assert rl_config_from_dict(rl_config_to_dict(cpu)) == cpu
    assert cpu.env_options == {"num_symbols": 4, "length": 10}
    assert rl_config(env="count_recall", preset="cpu").env_options == {}  # another env: not its options
    kept = rl_config(env="repeat_previous", preset="cpu", overrides=["env_options={\"delay\": 2}"])
    assert kept.env_options == {"delay": 2}


def test_cli_dry_run_and_resume_rules(tmp_path, capsys):
    from fastweights.cli import main

    assert main(["train", "rl", "--env", "repeat_first", "--model", "delta_rnn", "--dry-run", "seed=2"]) == 0
    out = capsys.readouterr().out
    assert '"model": "delta_rnn"' in out and "observation [5], 4 actions" in out and "parameters: " in out
    assert main(["train", "rl", "--model", "feedforward", "--run-dir", str(tmp_path / "r"), *TINY]) == 0
    assert read_json(tmp_path / "r" / "results.json")["updates"] == 6
    assert main(["train", "rl", "--model", "lstm", "--resume", str(tmp_path / "r")]) == 2
    assert "keeps its config.json" in capsys.readouterr().err
    assert main(["train", "rl", "--resume", str(tmp_path / "missing")]) == 2
    assert "not a run directory (no config.json)" in capsys.readouterr().err


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["model=transformer"], "model: expected one of"),
    (["discount=2"], "discount"),
    (["num_envs=0"], "num_envs"),
    (["colour=red"], "unknown key"),
    (["lr=0"], "lr"),
    (["layer_options={\"bogus\": 1}"], "bogus"),
    (["extra_checkpoints=0"], "extra_checkpoints"),
    (["device=tpu"], "device"),
    (["eval_mode=sequential"], "eval_mode: expected one of"),
    (["env=repeat_first", "eval_noneg=true"], "eval_noneg: the filter restarts Atari games"),
])
def test_bad_config(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        rl_config(overrides=overrides)


def test_unknown_env_fails_on_build(tmp_path):
    with pytest.raises(ValueError, match="unknown environment"):
        train(tiny_config("lstm", "env=nowhere"), tmp_path / "r", quiet=True)


def test_learning_memory_task(tmp_path):
    """RepeatFirst (4 symbols, 10 steps): the best memoryless policy earns 0.325, a policy with memory 1.0.
    ~200 updates of 32 x 20 steps; about 20 s on one idle core."""
    budget = ["total_steps=128000", "eval_episodes=100", "eval_runs=2", "log_interval=50"]
    fast = train(rl_config("repeat_first", "delta_net", "cpu", budget), tmp_path / "delta_net")
    memoryless = train(rl_config("repeat_first", "feedforward", "cpu", budget), tmp_path / "ff")
    assert fast["eval"]["mean"] > 0.9, fast
    assert memoryless["eval"]["mean"] < 0.4, memoryless


@pytest.mark.skipif(not (importlib.util.find_spec("ale_py") and importlib.util.find_spec("gymnasium")),
                    reason="Atari needs gymnasium and ale-py (pip install 'fastweights[rl]')")
def test_atari_smoke_and_resume(tmp_path):
    """Two updates on Breakout with the paper's torso; the Atari env cannot be snapshot, so resume restarts it."""
    over = ["env=BreakoutNoFrameskip-v4", "num_envs=2", "unroll_length=4",
            "total_steps=16", "log_interval=1", "checkpoint_interval=1", "d_model=16", "num_heads=2", "d_ff=32",
            "eval_episodes=1", "eval_runs=1", "threads=1"]
    part = train(rl_config(None, "delta_net", "paper", over), tmp_path / "r", quiet=True)  # 2 updates, evaluation
    assert part["updates"] == 2 and part["parameters"] > 1_000_000
    meta = read_json(tmp_path / "r" / "meta.json")
    assert meta["obs_shape"] == [4, 84, 84] and meta["num_actions"] == 4
    cfg = rl_config_from_dict(read_json(tmp_path / "r" / "config.json"))
    cfg.total_steps = 24
    more = train(cfg, tmp_path / "r", resume=True, quiet=True, evaluate_at_end=False)
    assert more["updates"] == 3


# ----------------------------------------------------------------------------------------------------------------
# The official learner and test (the paper preset)
# ----------------------------------------------------------------------------------------------------------------

HAS_ALE = bool(importlib.util.find_spec("ale_py") and importlib.util.find_spec("gymnasium"))
needs_ale = pytest.mark.skipif(not HAS_ALE, reason="Atari needs gymnasium and ale-py (pip install 'fastweights[rl]')")
SMALL = ["d_model=16", "num_heads=2", "d_ff=32", "torso_dim=16", "lstm_hidden=8", "threads=1"]


@pytest.mark.parametrize("core", ["delta_net", "rdn", "delta_rnn"])
def test_paper_learner_has_no_gradient_through_the_state_across_steps(core):
    """The paper preset's learner gets the gradient of a step-by-step pass whose state is detached between steps
    (the official kernels return no gradient for the carried fast weights and recurrent outputs), not the
    gradient of back-propagation through the unroll."""
    cfg = rl_config(env="repeat_first", model=core, preset="paper",
                            overrides=[*SMALL, "torso=mlp", "env_options={\"length\": 4}"])
    assert cfg.cut_state_grad_every_step
    env, agent = build(cfg, num_envs=3)
    ro, _ = Actor(env, agent, torch.device("cpu"), seed=0).rollout(7)
    assert ro.done[:, 1:].any() and not ro.done[:, 1:].all()  # episodes end inside the unroll

    def grads(loss):
        return torch.autograd.grad(loss, list(agent.parameters()), allow_unused=True)

    cut = grads(learner_loss(agent, ro, cfg)[0])
    # reference: one step at a time, the state detached after each
    state, logits, values = ro.initial_state, [], []
    for t in range(ro.obs.shape[1]):
        out = agent(ro.obs[:, t:t + 1], ro.done[:, t:t + 1], ro.prev_reward[:, t:t + 1], ro.prev_action[:, t:t + 1],
                    state)
        state = detach_state(out.state)
        logits.append(out.logits)
        values.append(out.baseline)
    logits, values = torch.cat(logits, 1), torch.cat(values, 1)
    T = ro.actions.shape[1]
    ref = impala_loss(logits[:, :T], values[:, :T], values[:, T], ro.behaviour_logits, ro.actions,
                      ro.rewards.clamp(-1, 1), cfg.discount * (~ro.done[:, 1:]).float(),
                      baseline_cost=cfg.baseline_cost, entropy_cost=cfg.entropy_cost).total
    for a, b in zip(cut, grads(ref), strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # back-propagation through the unroll (the flag off) is another learner: it gets another gradient
    cfg.cut_state_grad_every_step = False
    full = grads(learner_loss(agent, ro, cfg)[0])
    core_params = [i for i, (name, _) in enumerate(agent.named_parameters()) if name.startswith("core.")]
    assert any(not torch.allclose(cut[i], full[i]) for i in core_params)


def recorded_env(monkeypatch, log):
    """make_env as seen by the evaluation, recording each environment made and every step's info."""
    rl_evaluate = importlib.import_module("fastweights.rl.evaluate")
    real = rl_evaluate.make_env

    def make(name, num_envs, options=None):
        env = real(name, num_envs, options)
        step, reset = env.step, env.reset
        log.append({"num_envs": num_envs, "resets": 0, "infos": [], "env": env})

        def recording_step(actions):
            res = step(actions)
            log[-1]["infos"].append(res.info)
            return res

        def counting_reset(seed=None):
            log[-1]["resets"] += 1
            return reset(seed)

        env.step, env.reset = recording_step, counting_reset
        return env

    monkeypatch.setattr(rl_evaluate, "make_env", make)


def atari_agent(*overrides):
    cfg = rl_config(model="lstm", preset="paper", overrides=[*SMALL, *overrides])
    env, agent = build(cfg, num_envs=1)
    env.close()
    return cfg, agent


@needs_ale
def test_consecutive_evaluation_plays_per_life_episodes_back_to_back(monkeypatch):
    """The official test: one environment, reset once, plays runs x episodes per-life episodes in a row, through
    game overs and run boundaries; each run is the mean of its share of them, in order."""
    cfg, agent = atari_agent()
    log = []
    recorded_env(monkeypatch, log)
    out = evaluate_agent(agent, cfg, episodes=3, runs=3)
    assert [(e["num_envs"], e["resets"]) for e in log] == [(1, 1)]
    returns = [r for info in log[0]["infos"] for r in info["episode_returns"]]
    lives = [int(info["lives"][0]) for info in log[0]["infos"] if len(info["episode_returns"])]
    games = sum(len(info["game_returns"]) for info in log[0]["infos"])
    assert len(returns) == 9 and games >= 1  # Breakout has 5 lives: the 9 episodes span two games
    assert lives == [4, 3, 2, 1, 5, 4, 3, 2, 1]
    assert out["run_means"] == pytest.approx([np.mean(returns[i:i + 3]) for i in (0, 3, 6)])
    assert out["mode"] == "consecutive" and out["dropped"] == 0 and not out["noneg"]
    # the parallel mode: fresh copies every run, each with its share of first-life episodes here
    log.clear()
    par = evaluate_agent(agent, cfg, episodes=3, runs=2, mode="parallel", num_envs=3)
    assert [(e["num_envs"], e["resets"]) for e in log] == [(3, 1), (3, 1)] and par["mode"] == "parallel"
    with pytest.raises(ValueError, match="num_envs: the consecutive mode plays one environment"):
        evaluate_agent(agent, cfg, num_envs=2)


@needs_ale
def test_noneg_filter_drops_negative_episodes_and_restarts_the_game(monkeypatch):
    """The official evaluation of BattleZone and UpNDown: an episode with a negative return is not counted, the
    game restarts and the core state is zeroed; episodes are played until the runs are complete. A reward of
    -1000 injected into the first episode stands in for the emulator bug."""
    cfg, agent = atari_agent("eval_noneg=true")

    def run(noneg):
        log = []
        recorded_env(monkeypatch, log)
        rl_evaluate = importlib.import_module("fastweights.rl.evaluate")
        real_make = rl_evaluate.make_env

        def make(*args):
            env = real_make(*args)
            game, calls = env.games[0], [0]
            real_step = game._life_step

            def bugged(action):
                frame, reward, done = real_step(action)
                calls[0] += 1
                return frame, reward - 1000.0 * (calls[0] == 5), done

            game._life_step = bugged
            return env

        monkeypatch.setattr(rl_evaluate, "make_env", make)
        return evaluate_agent(agent, cfg, episodes=2, runs=1, noneg=noneg), log[0]

    out, log = run(noneg=True)
    infos = log["infos"]
    ended = [(float(r), int(info["lives"][0])) for info in infos for r in info["episode_returns"]]
    assert ended[0][0] < -900 and all(r >= 0 for r, _ in ended[1:]) and len(ended) == 3
    # the dropped episode ended the first life (4 left); the next episode is the first life of a new game
    assert [lives for _, lives in ended] == [4, 4, 3]
    assert out["dropped"] == 1 and out["noneg"] and out["run_means"] == [pytest.approx(np.mean([ended[1][0],
                                                                                               ended[2][0]]))]
    kept, _ = run(noneg=False)  # without the filter the bugged episode counts
    assert kept["dropped"] == 0 and kept["run_means"][0] <= -500
