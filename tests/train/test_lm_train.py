"""Language-model training, evaluation and generation (``fastweights.train.lm`` and ``fastweights train|eval|generate``
for LM runs): the schedule, learning, bit-exact resume, the three evaluation modes against their definitions,
greedy decoding against full forwards, the paper preset's parameter counts, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import math
import random
import signal
from pathlib import Path

import pytest
import torch

from fastweights.cli import main
from fastweights.data.lm import Vocabulary, unigram_perplexity
from fastweights.fields import ConfigError
from fastweights.models import state_types
from fastweights.models.lm import LMConfig, build_lm
from fastweights.runs.directory import load_checkpoint, read_json
from fastweights.runs.interrupt import Interrupted
from fastweights.tasks import resolve_config
from fastweights.train.config import LMTrainConfig
from fastweights.train.lm import (
    evaluate_lm,
    evaluate_lm_run,
    generate,
    generate_from_run,
    load_lm_data,
    load_lm_model,
    lr_at,
    train_lm,
)

TIMING_COLUMNS = ("elapsed_s", "tokens_per_s")
#: A model and schedule small enough that tens of steps take about a second on one thread.
TINY = {"d_model": 16, "num_layers": 1, "num_heads": 2, "head_dim": 8, "d_ff": 32, "dropout": 0.0, "softmax": "full",
        "position_order": "forward", "lr": 0.01, "warmup_steps": 2, "max_steps": 6, "batch_size": 4, "tgt_len": 12,
        "eval_tgt_len": 12, "eval_batch_size": 8, "eval_interval": 2, "log_every_s": 1000.0, "threads": 1}


def write_corpus(root: Path, lines: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A word-level corpus with structure: 24 words, each followed by one of two successors."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(24)]
    succ = {w: (words[(i * 5 + 1) % 24], words[(i * 7 + 3) % 24]) for i, w in enumerate(words)}
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (lines or {"train": 300, "valid": 30, "test": 30}).items():
        out = []
        for _ in range(n):
            w = rng.choice(words)
            sent = [w]
            for _ in range(rng.randint(4, 9)):
                w = rng.choice(succ[w])
                sent.append(w)
            out.append(" ".join(sent))
        (root / f"{split}.txt").write_text("\n".join(out) + "\n")
    return root


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("lm_corpus"))


def tiny_cfg(corpus_dir: Path, tmp_path: Path, **overrides) -> LMTrainConfig:
    values = {**TINY, "data": str(corpus_dir), "out_dir": str(tmp_path / "runs"), **overrides}
    cfg = LMTrainConfig(**values)
    cfg.validate()
    return cfg


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in csv.DictReader(f)]


def random_lm(model: str = "delta_net", vocab: int = 11, **kwargs) -> torch.nn.Module:
    """A tiny float64 LM with large random weights (clearly separated logits)."""
    torch.manual_seed(0)
    cfg = LMConfig(model, vocab, **{"d_model": 8, "num_layers": 2, "num_heads": 2, "d_ff": 16, "dropout": 0.0,
                                    "softmax": "full", "init_std": 0.3, **kwargs})
    return build_lm(cfg).double().eval()


# ----------------------------------------------------------------------------------------------------------------
# Schedule and training
# ----------------------------------------------------------------------------------------------------------------


def test_lr_warmup_then_cosine():
    """The official loop: the first update at the full rate (the rate is adjusted only after it), then lr * s / W."""
    cfg = LMTrainConfig(lr=1.0, warmup_steps=4, max_steps=100)
    assert [lr_at(s, cfg) for s in range(4)] == [1.0, 0.25, 0.5, 0.75]
    assert lr_at(4, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 100)))
    assert lr_at(50, cfg) == pytest.approx(0.5)
    assert lr_at(99, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert lr_at(0, LMTrainConfig(lr=1.0, warmup_steps=0, max_steps=10)) == 1.0


def test_paper_preset_is_spec_e1():
    cfg = resolve_config("lm", "paper", [], model="delta_rnn")
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.d_ff) == (16, 128, 8, 16, 2048)
    assert (cfg.dropout, cfg.dropatt, cfg.lr) == (0.1, 0.0, 2.5e-4)
    assert (cfg.beta1, cfg.beta2, cfg.adam_eps) == (0.9, 0.999, 1e-8)
    assert (cfg.warmup_steps, cfg.max_steps, cfg.grad_norm_clip, cfg.batch_size, cfg.tgt_len) == (2000, 500000, 0.25,
                                                                                                   96, 256)
    assert cfg.cutoffs == [20000, 40000, 200000] and cfg.seed == 1111
    fields = cfg.model_fields()
    assert (fields["block"], fields["positional_encoding"], fields["position_order"]) == ("paper", "sinusoidal",
                                                                                        "reversed")
    carry = resolve_config("lm", "paper", [], model="delta_rnn", carry_state=True).model_fields()
    assert (carry["block"], carry["positional_encoding"]) == ("post_ln", "none")  # the "+ full context" rows


@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_lm_presets_resolve_for_every_model(preset):
    from fastweights.layers import available_layers

    for model in available_layers():
        cfg = resolve_config("lm", preset, [], model=model)
        assert cfg.task == "lm" and cfg.model == model


def test_training_learns_and_writes_a_run(corpus_dir, tmp_path):
    cfg = tiny_cfg(corpus_dir, tmp_path, max_steps=40, eval_interval=10, lr=0.02, warmup_steps=5)
    run = tmp_path / "run"
    results = train_lm(cfg, run, quiet=True)
    assert sorted(p.name for p in run.iterdir() if p.name != "tensorboard") == [
        "best.pt", "config.json", "last.pt", "meta.json", "metrics.csv", "results.json", "vocab.json"]
    assert read_json(run / "vocab.json") == {**load_lm_data(cfg).vocab.to_dict(), "level": "word",
                                             "tokenizer": "whitespace"}
    rows = metric_rows(run)
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40]
    assert set(rows[0]) == {"step", "epochs", "train_loss", "train_ppl", "valid_loss", "valid_ppl", "lr"}
    valid = [float(r["valid_loss"]) for r in rows]
    corpus = load_lm_data(cfg)
    unigram = math.log(unigram_perplexity(corpus.train, corpus.valid, corpus.vocab_size))
    assert valid[-1] < valid[0] - 0.3 and valid[-1] < unigram - 0.3, (valid, unigram)
    assert results["test"]["tokens"] == corpus.test.numel() - 1 and results["test"]["mode"] == "segments"
    assert results["best_valid"]["valid_loss"] == pytest.approx(min(valid), rel=1e-5)
    assert read_json(run / "results.json")["steps_done"] == 40
    meta = read_json(run / "meta.json")
    assert meta["parameters"] == results["parameters"] and meta["world_size"] == 1


@pytest.mark.parametrize("where", ["interval end", "mid-interval"])
@pytest.mark.parametrize("carry_state", [False, True], ids=["segments", "carry"])
def test_resume_is_bit_exact(corpus_dir, tmp_path, monkeypatch, carry_state, where):
    """Stopped after step 4 (a validation), or by SIGTERM inside step 4 (between validations: the checkpoint holds
    step 3 with the sums of the metrics row in progress), then resumed: the uninterrupted run bit for bit."""
    from fastweights.train.lm import loop as lm_train

    cfg = tiny_cfg(corpus_dir, tmp_path, dropout=0.1, carry_state=carry_state, model="delta_rnn")
    full, cut = tmp_path / "full", tmp_path / "cut"
    train_lm(cfg, full, quiet=True)
    if where == "interval end":
        train_lm(cfg, cut, quiet=True, stop_after_steps=4)
        assert load_checkpoint(cut / "last.pt", types=state_types())["step"] == 4
    else:
        real, calls = lm_train.train_batch, [0]

        def batch_then_signal(*args):
            out = real(*args)
            calls[0] += 1
            if calls[0] == 4:
                signal.raise_signal(signal.SIGTERM)
            return out

        monkeypatch.setattr(lm_train, "train_batch", batch_then_signal)
        with pytest.raises(Interrupted) as exc:
            train_lm(cfg, cut, quiet=True)
        monkeypatch.undo()
        assert str(exc.value) == (f"interrupted (SIGTERM) at step 3/6: saved {cut / 'last.pt'}; resume with: "
                                  f"fastweights train lm --resume {cut}")
        assert load_checkpoint(cut / "last.pt", types=state_types())["step"] == 3 and len(metric_rows(cut)) == 1
    assert not (cut / "results.json").exists()
    if carry_state:  # the carried state at the boundary is in the checkpoint
        assert load_checkpoint(cut / "last.pt", types=state_types())["ranks"][0]["state"] is not None
    train_lm(cfg, cut, quiet=True, resume=True)
    a, b = load_checkpoint(full / "last.pt", types=state_types()), load_checkpoint(cut / "last.pt", types=state_types())
    assert a["step"] == b["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert metric_rows(full) == metric_rows(cut)
    ra, rb = read_json(full / "results.json"), read_json(cut / "results.json")
    assert ra["test"] == rb["test"] and ra["best_valid"] == rb["best_valid"]


def test_carry_state_reads_streams_in_order(corpus_dir, tmp_path, monkeypatch):
    """With carry_state the windows continue each stream, and the state restarts only at a new pass."""
    from fastweights.train.lm import loop as lm_train

    seen = []
    real = lm_train.train_batch

    def spy(cfg, ids, step, dist, batcher):
        out = real(cfg, ids, step, dist, batcher)
        seen.append((step, out[0][:, 0].clone(), out[2]))
        return out

    monkeypatch.setattr(lm_train, "train_batch", spy)
    cfg = tiny_cfg(corpus_dir, tmp_path, carry_state=True, batch_size=2, tgt_len=400, max_steps=5, eval_interval=5)
    corpus = load_lm_data(cfg)
    train_lm(cfg, tmp_path / "run", quiet=True)
    per_pass = (corpus.train.numel() // 2 - 1) // 400
    assert [s[2] for s in seen] == [(s % per_pass) == 0 for s in range(5)]
    stream_len = corpus.train.numel() // 2
    for step, first_tokens, _ in seen:
        k = step % per_pass
        assert first_tokens.tolist() == [int(corpus.train[k * 400]), int(corpus.train[stream_len + k * 400])]


# ----------------------------------------------------------------------------------------------------------------
# Evaluation modes against their definitions
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["delta_net", "delta_rnn", "transformer"])
@pytest.mark.parametrize(("pe", "order"), [("sinusoidal", "forward"), ("sinusoidal", "reversed"),
                                           ("none", "reversed")])
def test_sliding_equals_one_forward_per_token(model, pe, order):
    """The official definition: targets 1..W from one forward over the first window, every later token j as the
    last position of a separate forward over ids[j - W:j]. Without reversed positions the first window's targets
    also equal separate forwards over their own prefixes."""
    lm = random_lm(model, positional_encoding=pe, position_order=order)
    torch.manual_seed(1)
    ids = torch.randint(0, 11, (23,))
    W = 5
    out = evaluate_lm(lm, ids, "sliding", context=W, batch_size=3)
    expected, per_prefix = [], []
    with torch.no_grad():
        first, _ = lm(ids[:W][None])
        for j in range(1, ids.numel()):
            log_probs, _ = lm(ids[max(0, j - W):j][None])  # a separate forward over token j's own context
            per_prefix.append(-float(log_probs[0, -1, ids[j]]))
            expected.append(-float(first[0, j - 1, ids[j]]) if j <= W else per_prefix[-1])
    assert out["tokens"] == 22 and out["context"] == W and out["mode"] == "sliding"
    assert out["loss"] == pytest.approx(sum(expected) / len(expected), rel=1e-12, abs=1e-12)
    if order == "forward" or pe == "none":
        assert out["loss"] == pytest.approx(sum(per_prefix) / len(per_prefix), rel=1e-12, abs=1e-12)
    else:  # reversed position codes: the first window's targets differ from separate forwards
        assert out["loss"] != pytest.approx(sum(per_prefix) / len(per_prefix), rel=1e-9)
    assert out["ppl"] == pytest.approx(math.exp(out["loss"]))
    # context longer than the text: every token sees its whole prefix
    whole = evaluate_lm(lm, ids[:4], "sliding", context=10)
    assert whole["tokens"] == 3


@pytest.mark.parametrize(("model", "pe", "order"), [("delta_net", "none", "reversed"),
                                                    ("delta_rnn", "sinusoidal", "forward"),
                                                    ("rdn", "none", "reversed"), ("lstm", "none", "reversed")])
def test_carry_equals_one_forward_over_the_text(model, pe, order):
    lm = random_lm(model, positional_encoding=pe, position_order=order)
    torch.manual_seed(2)
    ids = torch.randint(0, 11, (30,))
    with torch.no_grad():
        nll, _ = lm(ids[:-1][None], targets=ids[1:][None])
    for chunk in (4, 7, 100):
        out = evaluate_lm(lm, ids, "carry", context=chunk)
        assert out["tokens"] == 29
        assert out["loss"] == pytest.approx(float(nll.mean()), rel=1e-12)


def test_segments_score_independent_segments():
    lm = random_lm("delta_net", positional_encoding="sinusoidal", position_order="reversed")
    torch.manual_seed(3)
    ids = torch.randint(0, 11, (24,))
    out = evaluate_lm(lm, ids, "segments", context=5, batch_size=2)
    total = 0.0
    with torch.no_grad():
        for s in range(0, 23, 5):  # 23 predictions: 4 segments of 5 and one of 3, each from a zero state
            x, y = ids[s:min(s + 5, 23)], ids[s + 1:min(s + 5, 23) + 1]
            total += float(lm(x[None], targets=y[None])[0].sum())
    assert out["tokens"] == 23
    assert out["loss"] == pytest.approx(total / 23, rel=1e-12)
    # sliding sees more context than segments on this model: different numbers
    assert evaluate_lm(lm, ids, "sliding", context=5)["loss"] != pytest.approx(out["loss"])


def test_evaluate_lm_rejects_bad_input():
    lm = random_lm()
    ids = torch.randint(0, 11, (10,))
    with pytest.raises(ValueError, match=r"mode: expected one of \['sliding', 'carry', 'segments'\], got 'slide'"):
        evaluate_lm(lm, ids, "slide")
    with pytest.raises(ValueError, match="context: expected a positive integer, got 0"):
        evaluate_lm(lm, ids, "sliding", context=0)
    with pytest.raises(ValueError, match="ids: expected at least 2 tokens"):
        evaluate_lm(lm, ids[:1], "segments")
    with pytest.raises(ValueError, match="ids: expected a 1-D integer tensor"):
        evaluate_lm(lm, ids.float(), "segments")


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------


def toy_vocab(n: int = 11) -> Vocabulary:
    return Vocabulary(["<eos>", "<unk>", *[f"w{i}" for i in range(n - 2)]])


@pytest.mark.parametrize(("model", "pe", "order"), [("delta_net", "sinusoidal", "forward"),
                                                    ("delta_rnn", "none", "reversed"),
                                                    ("transformer", "sinusoidal", "forward")])
def test_greedy_decoding_equals_argmax_of_full_forwards(model, pe, order):
    # untied output weights: a random tied model tends to repeat its input token for ever
    lm = random_lm(model, positional_encoding=pe, position_order=order, tie_weight=False)
    vocab = toy_vocab()
    out = generate(lm, vocab, "w3 w1 w4", 12, temperature=0)
    assert out.prompt_ids == vocab.encode(["w3", "w1", "w4"]) and len(out.ids) == 12
    seq = list(out.prompt_ids)
    with torch.no_grad():
        for token in out.ids:
            log_probs, _ = lm(torch.tensor([seq]))
            assert token == int(log_probs[0, -1].argmax())
            seq.append(token)
    assert out.tokens == vocab.decode(out.ids)
    assert len(set(out.ids)) > 1  # not a degenerate constant sequence


def test_sampling_is_seeded_and_top_k_1_is_greedy():
    lm = random_lm("delta_net", positional_encoding="none")
    vocab = toy_vocab()
    a = generate(lm, vocab, "w2", 20, temperature=1.0, seed=5)
    b = generate(lm, vocab, "w2", 20, temperature=1.0, seed=5)
    assert a.ids == b.ids
    assert generate(lm, vocab, "w2", 20, temperature=0.7, top_k=1, seed=9).ids == \
        generate(lm, vocab, "w2", 20, temperature=0).ids
    assert generate(lm, vocab, "", 3, temperature=0).prompt_ids == [vocab.eos_id]  # empty prompt: a new line
    assert generate(lm, vocab, "w2\nw3", 1, temperature=0).prompt_ids == vocab.encode(["w2", "<eos>", "w3"])


def test_detokenize_and_prompt_joining():
    from fastweights.train.lm import Generation, detokenize

    tokens = ["a", ",", "b", "<eos>", "[", "Enter", "X", "]", "."]
    assert detokenize(tokens, "word", "punctuation") == "a, b\n[Enter X]."
    assert detokenize(tokens, "word", "whitespace") == "a , b\n[ Enter X ] ."  # WikiText keeps its spaces
    assert detokenize(["a", " ", "b", "<eos>", "c"], "char") == "a b\nc"
    word = Generation([1], [2, 3], ["to", "be"], "to be", "word", "punctuation")
    assert word.after("I want") == "I want to be" and word.after("") == "to be" and word.after("x\n") == "x\nto be"
    assert Generation([1], [2], [","], ",", "word", "punctuation").after("Yes") == "Yes,"
    assert Generation([1], [2], ["e"], "e", "char", None).after("To b") == "To be"


def test_generate_rejects_reversed_positions_and_bad_arguments():
    lm = random_lm("delta_net", positional_encoding="sinusoidal", position_order="reversed")
    vocab = toy_vocab()
    with pytest.raises(ValueError, match=r"generate: .*position_order='reversed'.*position_order=forward"):
        generate(lm, vocab, "w1", 3)
    ok = random_lm("delta_net", positional_encoding="none")
    with pytest.raises(ValueError, match="max_tokens: expected a positive integer, got 0"):
        generate(ok, vocab, "w1", 0)
    with pytest.raises(ValueError, match="temperature: expected a finite number >= 0"):
        generate(ok, vocab, "w1", 3, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k: expected a positive integer, got 0"):
        generate(ok, vocab, "w1", 3, top_k=0)
    with pytest.raises(ValueError, match="vocab: 12 tokens, but the model has vocab_size 11"):
        generate(ok, toy_vocab(12), "w1", 3)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("FASTWEIGHTS_DEBUG", raising=False)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *fragments: str) -> None:
    assert rc == 2, err
    assert err.startswith("fastweights: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


TINY_ARGS = [f"{k}={v}" for k, v in TINY.items()]


@pytest.fixture(scope="module")
def lm_run(corpus_dir, tmp_path_factory) -> Path:
    """A tiny LM run trained through the CLI (forward positions: every eval mode and generation work)."""
    run = tmp_path_factory.mktemp("lm_cli") / "run"
    assert main(["train", "lm", "--model", "delta_net", "--data", str(corpus_dir), *TINY_ARGS, "--run-dir",
                 str(run)]) == 0
    return run


def test_cli_train_eval_generate_plot(capsys, lm_run, corpus_dir, tmp_path):
    assert (lm_run / "results.json").is_file()
    n_test = load_lm_data(resolve_config("lm", None, TINY_ARGS, data=str(corpus_dir))).test.numel()
    for mode, context in (("sliding", TINY["tgt_len"]), ("carry", TINY["eval_tgt_len"]),
                          ("segments", TINY["eval_tgt_len"])):
        rc, out, err = cli(capsys, "eval", lm_run, "--split", "test", "--mode", mode)
        assert rc == 0, err
        metrics = json.loads(out)
        assert metrics["mode"] == mode and metrics["context"] == context and metrics["tokens"] == n_test - 1
        assert metrics["ppl"] == pytest.approx(math.exp(metrics["loss"]))
        assert metrics == evaluate_lm_run(lm_run, "test", mode)
    rc, out, _ = cli(capsys, "eval", lm_run, "--context", "3", "--split", "valid")
    assert rc == 0 and json.loads(out)["mode"] == "sliding" and json.loads(out)["context"] == 3  # default mode
    rc, out, err = cli(capsys, "generate", lm_run, "--prompt", "w1 w6", "--max-tokens", "8", "--temperature", "0")
    assert rc == 0, err
    greedy = generate_from_run(lm_run, "w1 w6", 8, temperature=0)
    assert out.startswith("w1 w6") and greedy.text in out
    rc, out, err = cli(capsys, "plot", lm_run, "--out", tmp_path / "curves.png")
    if rc == 0:
        assert (tmp_path / "curves.png").is_file()
    else:  # matplotlib missing
        assert "matplotlib" in err


def test_cli_resume_continues_and_refuses_new_options(capsys, corpus_dir, tmp_path):
    run = tmp_path / "run"
    cfg = resolve_config("lm", None, TINY_ARGS, model="delta_net", data=str(corpus_dir))
    train_lm(cfg, run, quiet=True, stop_after_steps=2)
    rc, _, err = cli(capsys, "train", "lm", "--resume", run, "lr=0.1")
    assert_one_line_error(rc, err, "resume: a resumed run keeps its config.json; remove lr=0.1")
    rc, _, err = cli(capsys, "train", "lm", "--resume", run)
    assert rc == 0, err
    assert read_json(run / "results.json")["steps_done"] == TINY["max_steps"]


def test_cli_dry_run_cpu_preset_on_the_embedded_corpus(capsys, tmp_path):
    rc, out, err = cli(capsys, "train", "lm", "--model", "delta_net", f"out_dir={tmp_path / 'runs'}", "--dry-run")
    assert rc == 0, err
    config_text, data_line, param_line = out.rsplit("\n", 3)[:3]
    cfg = json.loads(config_text)
    assert (cfg["num_layers"], cfg["d_model"], cfg["tgt_len"], cfg["batch_size"]) == (4, 128, 128, 16)  # cpu preset
    assert data_line.startswith("data: shakespeare (word level): vocabulary 20,773")
    assert int(param_line.removeprefix("parameters: ").replace(",", "")) > 0
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def wt103_sized_dir(tmp_path_factory) -> Path:
    """A WikiText-format directory whose training split has exactly WikiText-103's 267,735 word types."""
    root = tmp_path_factory.mktemp("wt103_vocab")
    words = [f"w{i}" for i in range(267_733)] + ["<unk>"]  # + <eos> = 267,735 types
    lines = [" ".join(words[i:i + 1000]) for i in range(0, len(words), 1000)]
    (root / "wiki.train.tokens").write_text("\n".join(lines) + "\n")
    (root / "wiki.valid.tokens").write_text("w1 w2 w3\n")
    (root / "wiki.test.tokens").write_text("w4 w5 w6\n")
    return root


@pytest.mark.parametrize(("model", "expected"), [("delta_net", 44_034_778), ("delta_rnn", 44_575_450),
                                                 ("rdn", 44_135_130), ("transformer", 44_018_394)])
def test_cli_dry_run_paper_preset_parameter_counts(capsys, wt103_sized_dir, model, expected):
    rc, out, err = cli(capsys, "train", "lm", "--model", model, "--preset", "paper", "--data", wt103_sized_dir,
                       "--dry-run")
    assert rc == 0, err
    _, data_line, param_line = out.rsplit("\n", 3)[:3]
    assert "vocabulary 267,735" in data_line
    assert int(param_line.removeprefix("parameters: ").replace(",", "")) == expected  # paper.md A.11


@pytest.mark.parametrize(("args", "fragments"), [
    (["bogus_key=1"], ["unknown key 'bogus_key'", "valid keys:", "tgt_len", "carry_state"]),
    (["tgt_len=0"], ["tgt_len: expected a positive integer, got 0"]),
    (["tgt_len=abc"], ["tgt_len: expected an integer, got 'abc'"]),
    (["cutoffs=a,b"], ["cutoffs: expected a list of integers"]),
    (["cutoffs=10,5"], ["cutoffs: expected strictly increasing values"]),
    (["level=byte"], ["level: expected 'word' or 'char', got 'byte'"]),
    (["position_order=backwards"], ["position_order: expected one of ['reversed', 'forward']"]),
    (["--num-vars", "3"], ["--num-vars: only for code-exec, not for lm"]),
    (["--model", "transformer", "--carry-state"], ["carry_state: the transformer's state is a KV cache"]),
    (["--preset", "papper"], ["unknown preset 'papper' for lm", "'cpu'", "'paper'"]),
    (["layer_options={\"bogus\": 1}"], ["takes no option(s) ['bogus']"]),
    (["tgt_len=100000"], ["tgt_len: the training split has", "fewer than tgt_len + 1 = 100001"]),
    (["--data", "/nonexistent/dir"], ["/nonexistent/dir"]),
])
def test_bad_lm_train_input_is_one_line(capsys, corpus_dir, args, fragments):
    data = [] if "--data" in args else ["--data", str(corpus_dir)]
    rc, out, err = cli(capsys, "train", "lm", *data, *TINY_ARGS, *args, "--dry-run")
    assert_one_line_error(rc, err, *fragments)
    assert out == ""


def test_global_batch_must_split_over_the_processes(corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    cfg = tiny_cfg(corpus_dir, tmp_path, batch_size=3)
    with pytest.raises(ConfigError, match=r"batch_size: the global batch \(3\) must be divisible by the number of "
                                          r"processes \(2\)"):
        train_lm(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


def test_eval_and_generate_errors_are_one_line(capsys, corpus_dir, tmp_path, lm_run):
    rc, _, err = cli(capsys, "eval", tmp_path)
    assert_one_line_error(rc, err, "not a run directory")
    rc, _, err = cli(capsys, "generate", tmp_path, "--prompt", "w1")
    assert_one_line_error(rc, err, "not a run directory")
    rc, _, err = cli(capsys, "eval", lm_run, "--context", "0")
    assert_one_line_error(rc, err, "context: expected a positive integer, got 0")
    rc, _, err = cli(capsys, "generate", lm_run, "--max-tokens", "0")
    assert_one_line_error(rc, err, "max_tokens: expected a positive integer, got 0")
    rc, _, err = cli(capsys, "generate", lm_run, "--top-k", "0")
    assert_one_line_error(rc, err, "top_k: expected a positive integer, got 0")
    # a run with the paper's reversed positions cannot be decoded step by step
    reversed_run = tmp_path / "reversed"
    cfg = tiny_cfg(corpus_dir, tmp_path, position_order="reversed", max_steps=2)
    train_lm(cfg, reversed_run, quiet=True)
    rc, _, err = cli(capsys, "generate", reversed_run, "--prompt", "w1")
    assert_one_line_error(rc, err, "position_order='reversed'", "position_order=forward")
    rc, _, err = cli(capsys, "train", "listops", "--carry-state", "--dry-run")
    assert_one_line_error(rc, err, "--carry-state: only for lm, not for listops")


def test_lm_options_on_an_algorithmic_run_are_one_line_errors(capsys, tiny_cfg, tmp_path):
    from fastweights.train import algorithmic

    run = tmp_path / "listops-run"
    algorithmic.train(tiny_cfg(task="listops", epochs=1, train_size=16), run, quiet=True)
    rc, _, err = cli(capsys, "eval", run, "--mode", "sliding", "--context", "4")
    assert_one_line_error(rc, err, "--mode --context: only for lm runs", "is a listops run")
    rc, _, err = cli(capsys, "generate", run)
    assert_one_line_error(rc, err, "is a listops run; generate needs a language-model run")
    rc, out, err = cli(capsys, "eval", run, "--split", "valid")  # the algorithmic evaluation still works
    assert rc == 0 and json.loads(out)["split"] == "valid", err


@pytest.mark.parametrize(("test_mode", "carry", "mode"), [("segments", False, "segments"), ("auto", False, "sliding"),
                                                          ("auto", True, "carry"), ("carry", False, "carry")])
def test_the_end_of_training_test_follows_test_mode(corpus_dir, tmp_path, test_mode, carry, mode):
    """results.json's test is the best checkpoint under ``test_mode`` (auto = the paper's protocol of the run)."""
    cfg = tiny_cfg(corpus_dir, tmp_path, test_mode=test_mode, carry_state=carry)
    results = train_lm(cfg, tmp_path / "run", quiet=True)
    assert results["test"]["mode"] == mode and results["test_time_s"] >= 0
    again = evaluate_lm_run(tmp_path / "run", "test", mode)
    assert results["test"]["ppl"] == pytest.approx(again["ppl"], rel=1e-9)


def test_test_mode_is_checked():
    with pytest.raises(ValueError, match=r"test_mode: expected one of \['sliding', 'carry', 'segments', 'auto'\], "
                                         r"got 'stride'"):
        LMTrainConfig(test_mode="stride").validate()


def _stream_reference_loss(model: torch.nn.Module, ids: torch.Tensor, streams: int) -> float:
    """The mean NLL of ``streams`` contiguous streams of ``ids`` (the rest dropped), each one forward from a zero
    state in float64: what a validation with the state carried along the streams must equal."""
    model = model.double()
    length = ids.numel() // streams
    total, count = 0.0, 0
    with torch.no_grad():
        for j in range(streams):
            s = ids[j * length:(j + 1) * length].long()
            nll, _ = model(s[:-1][None], targets=s[1:][None])
            total, count = total + float(nll.sum()), count + s.numel() - 1
    return total / count


@pytest.mark.parametrize(("valid_mode", "carry", "carried"), [("auto", True, True), ("auto", False, False),
                                                              ("segments", True, False), ("carry", False, True)])
def test_the_validation_follows_valid_mode(corpus_dir, tmp_path, valid_mode, carry, carried):
    """Each metrics row's validation is the last checkpoint's loss on the valid split: with the state carried along
    eval_batch_size streams (auto with carry_state, or carry), else on segments from a zero state."""
    cfg = tiny_cfg(corpus_dir, tmp_path, valid_mode=valid_mode, carry_state=carry, positional_encoding="none",
                   eval_batch_size=3, eval_tgt_len=5, max_steps=20, eval_interval=10, lr=0.02)
    assert cfg.validation_protocol() == ("carry" if carried else "segments")
    run = tmp_path / "run"
    train_lm(cfg, run, quiet=True)
    _, _, model = load_lm_model(run, "last")
    corpus = load_lm_data(cfg)
    if carried:
        expected = _stream_reference_loss(model, corpus.valid, 3)
    else:
        expected = evaluate_lm(model.double(), corpus.valid, "segments", context=5)["loss"]
        # the two validations differ by far more than the tolerance below, so the test tells them apart
        assert expected != pytest.approx(_stream_reference_loss(model, corpus.valid, 3), rel=1e-4)
    assert float(metric_rows(run)[-1]["valid_loss"]) == pytest.approx(expected, rel=1e-5)


def test_valid_mode_is_checked(corpus_dir, tmp_path):
    with pytest.raises(ValueError, match=r"valid_mode: expected one of \['segments', 'carry', 'auto'\], got 'sliding'"):
        LMTrainConfig(valid_mode="sliding").validate()
    with pytest.raises(ConfigError, match="valid_mode: 'carry' needs a fast-weight or recurrent model"):
        LMTrainConfig(model="transformer", valid_mode="carry").validate()
    # too few valid tokens for the streams: refused before the run directory is written
    cfg = tiny_cfg(corpus_dir, tmp_path, carry_state=True, eval_batch_size=10_000)
    with pytest.raises(ValueError, match=r"eval_batch_size: the validation with the state carried reads 10000 "
                                         r"streams of at least 2 tokens, but the valid split has \d+ tokens"):
        train_lm(cfg, tmp_path / "short", quiet=True)
    assert not (tmp_path / "short" / "metrics.csv").exists()


def test_evaluation_builds_no_autograd_graph():
    """Evaluation runs under no_grad (a graph would hold every activation of a sliding-window pass)."""
    model = random_lm("delta_net").float()
    seen = []
    model.embedding.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled()))
    for mode in ("segments", "sliding", "carry"):
        evaluate_lm(model, torch.arange(30) % 11, mode, context=8)
    assert seen and not any(seen)
