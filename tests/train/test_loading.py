"""Trained models out of their runs: self-contained run directories (vocab.json, env.json), fastweights.load for every
task, export to safetensors and from_pretrained (bit for bit), the moved or deleted data of eval/generate, runs of
the older format, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_lm_train import TINY as LM_TINY
from test_lm_train import assert_one_line_error, cli, write_corpus

import fastweights
from fastweights.data.lm import load_corpus
from fastweights.loading import LoadedAgent, LoadedAlgorithmic, LoadedLM
from fastweights.runs.directory import RUN_FORMAT, read_json, write_json
from fastweights.train import algorithmic
from fastweights.train.config import LMTrainConfig
from fastweights.train.lm import evaluate_lm_run, generate_from_run, load_lm_run, train_lm

RL_TINY = ["env=repeat_previous", "env_options={\"length\": 6, \"delay\": 1}", "num_envs=4", "unroll_length=5",
           "total_steps=40", "log_interval=2", "checkpoint_interval=2", "torso_dim=8", "d_model=8", "num_heads=2",
           "d_ff=16", "eval_episodes=2", "eval_runs=1", "eval_envs=2", "threads=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fw_cache) -> dict[str, Path]:
    """One tiny finished run per task (LM on a corpus of its own, code-exec, ListOps, RL), trained once."""
    from fastweights.rl import train as train_rl
    from fastweights.tasks import resolve_config
    from fastweights.train.config import TrainConfig

    root = tmp_path_factory.mktemp("runs")
    out = {"corpus": write_corpus(root / "corpus")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTWEIGHTS_CACHE", str(fw_cache))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        cfg = LMTrainConfig(**{**LM_TINY, "data": str(out["corpus"]), "out_dir": str(root)})
        train_lm(cfg, root / "lm", quiet=True)
        for task in ("code-exec", "listops"):
            tiny = {"train_size": 40, "valid_size": 10, "test_size": 10, "code_length": 5, "d_model": 16,
                    "num_layers": 1, "num_heads": 2, "d_ff": 32, "batch_size": 8, "epochs": 1, "dropout": 0.0}
            algorithmic.train(TrainConfig(task=task, model="delta_rnn", **tiny), root / task, quiet=True)
        train_rl(resolve_config("rl", None, RL_TINY, model="delta_net"), root / "rl", quiet=True)
        torch.set_num_threads(threads)
    return {**out, "lm": root / "lm", "code-exec": root / "code-exec", "listops": root / "listops", "rl": root / "rl"}


def copy_run(runs: dict[str, Path], task: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs[task], tmp_path / task))


def same_outputs(task: str, a: torch.nn.Module, b: torch.nn.Module, loaded) -> None:
    """Both models give bit-identical outputs on the same inputs."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        if task == "rl":
            spec = loaded.env
            obs = torch.rand(3, 4, *spec.obs_shape, generator=g)
            done = torch.zeros(3, 4, dtype=torch.bool)
            out_a, out_b = a(obs, done), b(obs, done)
            assert torch.equal(out_a.logits, out_b.logits) and torch.equal(out_a.baseline, out_b.baseline)
            return
        vocab = len(loaded.vocab.vocab) if task == "lm" else loaded.vocab.vocab_size
        x = torch.randint(0, vocab, (3, 11), generator=g)
        out_a, out_b = a(x)[0], b(x)[0]
        assert out_a.shape[0] == 3 and torch.equal(out_a, out_b)


# ----------------------------------------------------------------------------------------------------------------
# Run directories
# ----------------------------------------------------------------------------------------------------------------


def test_runs_hold_their_vocabularies_and_environment(runs):
    lm = read_json(runs["lm"] / "vocab.json")
    assert lm["format"] == "fastweights-lm-vocab" and (lm["level"], lm["tokenizer"]) == ("word", "whitespace")
    assert lm["tokens"] == load_corpus(runs["corpus"]).vocab.tokens
    code = read_json(runs["code-exec"] / "vocab.json")
    data = algorithmic.load_task_data(algorithmic.algorithmic_run_config(runs["code-exec"]))
    assert (code["task"], code["input"], code["output"]) == ("code-exec", data.vocab.input, data.vocab.output)
    assert read_json(runs["listops"] / "vocab.json")["output"] == [str(c) for c in range(10)]
    env = read_json(runs["rl"] / "env.json")
    assert (env["env"], env["obs_shape"], env["obs_dtype"], env["num_actions"]) == ("repeat_previous", [5],
                                                                                     "float32", 4)
    for task in ("lm", "code-exec", "listops", "rl"):
        assert read_json(runs[task] / "meta.json")["run_format"] == RUN_FORMAT


@pytest.mark.parametrize("task", ["lm", "code-exec", "listops", "rl"])
def test_load_export_from_pretrained_bit_for_bit(runs, tmp_path, task):
    loaded = fastweights.load(runs[task])
    kind = {"lm": LoadedLM, "rl": LoadedAgent}.get(task, LoadedAlgorithmic)
    assert isinstance(loaded, kind) and loaded.task == task and not loaded.model.training
    assert loaded.checkpoint == ("last" if task == "rl" else "best")
    out = fastweights.export(runs[task], tmp_path / "export")
    files = sorted(p.name for p in out.iterdir())
    expected = {"lm": "vocab.json", "rl": "env.json"}.get(task, "vocab.json")
    assert {"config.json", "model.safetensors", expected} <= set(files)
    assert not any(name.endswith(".pt") for name in files)
    assert not list(tmp_path.glob(".export.tmp-*"))  # nothing left of the temporary directory
    back = fastweights.from_pretrained(out)
    assert type(back) is kind and back.task == task and not back.model.training and back.checkpoint is None
    same_outputs(task, loaded.model, back.model, loaded)
    for name, t in loaded.model.state_dict().items():
        assert torch.equal(t, back.model.state_dict()[name]), name


def test_lm_generate_and_eval_without_the_corpus(runs, tmp_path, capsys):
    run = copy_run(runs, "lm", tmp_path)
    corpus = Path(shutil.copytree(runs["corpus"], tmp_path / "corpus"))
    config = read_json(run / "config.json")
    write_json(run / "config.json", {**config, "data": str(corpus)})
    greedy = generate_from_run(run, "w1 w2", 8, temperature=0)
    before = evaluate_lm_run(run, "valid", "segments")
    moved = Path(shutil.move(corpus, tmp_path / "moved"))
    # generation needs only the run; the API object agrees with the run's own decoding
    assert generate_from_run(run, "w1 w2", 8, temperature=0).ids == greedy.ids
    loaded = fastweights.load(run)
    assert loaded.generate("w1 w2", 8, temperature=0).ids == greedy.ids
    assert loaded.generate("w1", 5, temperature=1.0, seed=4).ids == loaded.generate("w1", 5, temperature=1.0,
                                                                                    seed=4).ids
    rc, out, err = cli(capsys, "generate", run, "--prompt", "w1 w2", "--max-tokens", "8", "--temperature", "0")
    assert rc == 0 and out.strip() == greedy.after("w1 w2"), err
    # evaluation reads the moved corpus with --data, and refuses the old place and a corpus of other words
    rc, _, err = cli(capsys, "eval", run, "--split", "valid")
    assert_one_line_error(rc, err, "data: no such directory")
    rc, out, err = cli(capsys, "eval", run, "--split", "valid", "--mode", "segments", "--data", moved)
    assert rc == 0, err
    assert json.loads(out)["loss"] == before["loss"]
    other = write_corpus(tmp_path / "other", seed=1, lines={"train": 20, "valid": 5, "test": 5})
    rc, _, err = cli(capsys, "eval", run, "--split", "valid", "--data", other)
    assert_one_line_error(rc, err, "data: the corpus", "does not match the run", "tokens instead of the run's")


@pytest.mark.parametrize("task", ["code-exec", "listops"])
def test_algorithmic_eval_with_moved_data(runs, tmp_path, capsys, task):
    run = copy_run(runs, task, tmp_path)
    cfg = algorithmic.algorithmic_run_config(run)
    files = algorithmic.write_task_data(cfg, tmp_path / "data")
    assert files
    rc, out, err = cli(capsys, "eval", run, "--split", "valid")
    assert rc == 0, err
    rc, moved, err = cli(capsys, "eval", run, "--split", "valid", "--data", tmp_path / "data")
    assert rc == 0 and json.loads(moved) == json.loads(out), err
    loaded = fastweights.load(run)
    if task == "code-exec":
        data = algorithmic.load_task_data(cfg)
        program = [loaded.vocab.input[i] for i in data.splits["valid"].src[0, :int(data.splits["valid"].lengths[0])]]
        answer = loaded.predict(program)
        assert len(answer) == len(program) and set(answer) <= set(loaded.vocab.output)
    else:
        assert loaded.predict("[MAX 2 9 ]") in [str(c) for c in range(10)]
    with pytest.raises(ValueError, match=r"tokens: .*unknown \['nope'\]"):
        loaded.predict(["nope"])
    if task == "code-exec":  # other programs: the vocabularies' first-appearance order differs from the run's
        cfg.data_seed = 7
        algorithmic.write_task_data(cfg, tmp_path / "other")
        rc, _, err = cli(capsys, "eval", run, "--data", tmp_path / "other")
        assert_one_line_error(rc, err, "do not match the run's vocabularies", "first difference at index")


@pytest.mark.parametrize("task", ["lm", "code-exec", "rl"])
def test_a_run_without_its_vocabulary_or_run_format_is_refused(runs, tmp_path, capsys, task):
    """A run directory holds what using it needs (vocab.json, env.json) and says its layout (meta.json's
    run_format); one without is refused in one line, never read from its data."""
    run = copy_run(runs, task, tmp_path)
    spec = run / ("env.json" if task == "rl" else "vocab.json")
    spec.unlink()
    with pytest.raises(FileNotFoundError, match=f"has no {spec.name}"):
        fastweights.load(run)
    rc, _, err = cli(capsys, "eval", run)
    assert_one_line_error(rc, err, f"has no {spec.name}")
    run = copy_run(runs, task, tmp_path / "unformatted")
    meta = read_json(run / "meta.json")
    del meta["run_format"]
    write_json(run / "meta.json", meta)
    with pytest.raises(ValueError, match=r"has run_format None .* not a run directory of this fastweights"):
        fastweights.load(run)


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------


def test_a_run_of_a_newer_format_or_with_a_mistyped_config_is_refused(runs, tmp_path, capsys):
    run = copy_run(runs, "lm", tmp_path)
    meta = read_json(run / "meta.json")
    write_json(run / "meta.json", {**meta, "run_format": RUN_FORMAT + 1})
    with pytest.raises(ValueError, match=rf"run_dir: .* has run_format {RUN_FORMAT + 1} .* newer fastweights"):
        fastweights.load(run)
    for argv in (("generate", run), ("eval", run), ("export", run, tmp_path / "out")):
        rc, _, err = cli(capsys, *argv)
        assert_one_line_error(rc, err, f"run_format {RUN_FORMAT + 1}", "upgrade fastweights")
    assert not (tmp_path / "out").exists()
    write_json(run / "meta.json", meta)
    write_json(run / "config.json", {**read_json(run / "config.json"), "num_layers": "two"})
    for argv in (("generate", run), ("train", "lm", "--resume", run)):
        rc, _, err = cli(capsys, *argv)
        assert_one_line_error(rc, err, "config.json: num_layers: expected an integer, got 'two'")


def test_exports_with_bad_files_fail_in_one_line(runs, tmp_path, capsys):
    out = fastweights.export(runs["lm"], tmp_path / "good")

    def broken(name: str, edit) -> Path:
        bad = Path(shutil.copytree(out, tmp_path / name))
        edit(bad)
        return bad

    weights = (out / "model.safetensors").read_bytes()
    truncated = broken("truncated", lambda d: (d / "model.safetensors").write_bytes(weights[: len(weights) - 100]))
    config = read_json(out / "config.json")
    unknown = broken("unknown", lambda d: write_json(d / "config.json", {**config, "colour": "blue"}))
    inner = broken("inner", lambda d: write_json(d / "config.json", {
        **config, "train_config": {**config["train_config"], "d_modle": 16}}))
    mistyped = broken("mistyped", lambda d: write_json(d / "config.json", {
        **config, "train_config": {**config["train_config"], "num_layers": "two"}}))
    newer = broken("newer", lambda d: write_json(d / "config.json", {**config, "format_version": 99}))
    cases = {truncated: "is truncated: the tensors need", unknown: "unknown key 'colour'",
             inner: "train_config: unknown key 'd_modle'", mistyped: "train_config: num_layers: expected an integer",
             newer: "format_version 99 was written by a newer fastweights"}
    for path, fragment in cases.items():
        with pytest.raises(ValueError) as exc:
            fastweights.from_pretrained(path)
        assert fragment in str(exc.value) and "\n" not in str(exc.value), (fragment, str(exc.value))
        rc, _, err = cli(capsys, "generate", path, "--prompt", "w1")
        assert_one_line_error(rc, err, fragment)
    rc, _, err = cli(capsys, "export", runs["lm"], out)
    assert_one_line_error(rc, err, "already exists and is not an empty directory")


def test_a_run_of_another_task_is_refused_by_task_specific_calls(runs, tmp_path, capsys):
    from fastweights.rl import evaluate_run as evaluate_rl_run
    from fastweights.rl import load_agent

    with pytest.raises(ValueError, match=r"is a code-exec run, not a language-model run"):
        load_lm_run(runs["code-exec"])
    with pytest.raises(ValueError, match=r"is a listops run, not a language-model run"):
        generate_from_run(runs["listops"], "x", 3)
    with pytest.raises(ValueError, match=r"is a lm run, not a code-exec or listops run"):
        algorithmic.evaluate_run(runs["lm"])
    with pytest.raises(ValueError, match=r"is a rl run, not a code-exec or listops run"):
        algorithmic.load_algorithmic_model(runs["rl"])
    with pytest.raises(ValueError, match=r"is a lm run, not an rl run"):
        load_agent(runs["lm"])
    with pytest.raises(ValueError, match=r"is a code-exec run, not an rl run"):
        evaluate_rl_run(runs["code-exec"], episodes=1, runs=1)
    exported = fastweights.export(runs["listops"], tmp_path / "listops")
    rc, _, err = cli(capsys, "generate", exported)
    assert_one_line_error(rc, err, "is an exported listops model; generate needs a language model")
    rc, _, err = cli(capsys, "eval", runs["rl"], "--data", tmp_path)
    assert_one_line_error(rc, err, "--data: only for code-exec and listops and lm runs", "is a rl run")


def test_load_checks_the_checkpoint_name(runs):
    with pytest.raises(ValueError, match=r"checkpoint: expected 'best', 'last' or 'step-<N>', got '../x'"):
        fastweights.load(runs["lm"], checkpoint="../x")
    with pytest.raises(FileNotFoundError, match=r"step-7\.pt does not exist \(the run has \['best', 'last'\]\)"):
        fastweights.load(runs["lm"], checkpoint="step-7")
