"""A finished run: its configuration, vocabulary and model read back, evaluated, or continuing a prompt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...data.lm import (
    LMCorpus,
)
from ...fields import check_positive_int
from ...models import state_types
from ...models.lm import LanguageModel, build_lm
from ...runs.config import dataclass_from_dict
from ...runs.directory import (
    checkpoint_path,
    load_checkpoint,
    read_run_config,
    vocab_difference,
)
from ...weights import load_state
from ..config import LM_EVAL_MODES, LMTrainConfig
from .data import load_lm_data
from .evaluate import evaluate_lm
from .generate import VOCAB_FILE, Generation, LMVocab
from .model import lm_model_config

# ----------------------------------------------------------------------------------------------------------------
# Evaluating a run
# ----------------------------------------------------------------------------------------------------------------


def lm_run_config(run_dir: Path, device: str | None = None) -> LMTrainConfig:
    """The validated configuration of a language-model run directory (``device`` replaces the run's)."""
    values = read_run_config(run_dir)
    if values.get("task") != "lm":
        raise ValueError(f"run_dir: {run_dir} is a {values.get('task')} run, not a language-model run")
    cfg = dataclass_from_dict(LMTrainConfig, values, f"config: {Path(run_dir) / 'config.json'}: ")
    if device is not None:
        cfg.device = device
    cfg.validate()
    return cfg


def lm_run_vocab(run_dir: Path, cfg: LMTrainConfig, corpus: LMCorpus | None = None) -> LMVocab:
    """The vocabulary of a run: its ``vocab.json``, checked against ``corpus`` when one is given (a corpus whose
    vocabulary differs is refused)."""
    path = Path(run_dir) / VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(f"run_dir: {run_dir} has no {VOCAB_FILE} (the run stopped before training started)")
    vocab = LMVocab.load(path)
    if corpus is not None:
        diff = vocab_difference("vocabulary", vocab.vocab.tokens, corpus.vocab.tokens)
        if diff is not None or (corpus.level, corpus.tokenizer) != (vocab.level, vocab.tokenizer):
            diff = diff or (f"read as {corpus.level}/{corpus.tokenizer}, the run's is {vocab.level}/"
                            f"{vocab.tokenizer}")
            raise ValueError(f"data: the corpus {corpus.source} does not match the run {run_dir} ({diff})")
    return vocab


def load_lm_model(run_dir: Path, checkpoint: str = "best", *, device: str | None = None,
                  corpus: LMCorpus | None = None) -> tuple[LMTrainConfig, LMVocab, LanguageModel]:
    """The configuration, vocabulary and trained model (in eval mode) of a language-model run directory; no data is
    read when the run holds its vocabulary (see :func:`lm_run_vocab`)."""
    cfg = lm_run_config(run_dir, device)
    path = checkpoint_path(run_dir, checkpoint)
    vocab = lm_run_vocab(run_dir, cfg, corpus)
    model = build_lm(lm_model_config(cfg, len(vocab.vocab)))
    load_state(model, load_checkpoint(path, keys=("model",), types=state_types())["model"], f"checkpoint: {path}")
    return cfg, vocab, model.to(cfg.device).eval()


def load_lm_run(run_dir: Path, checkpoint: str = "best", *, device: str | None = None,
                corpus: LMCorpus | None = None, data: str | Path | None = None
                ) -> tuple[LMTrainConfig, LMCorpus, LanguageModel]:
    """The configuration, corpus and trained model (in eval mode) of a language-model run directory.

    ``data`` reads the corpus from another directory than the run's (a moved corpus), tokenised as in the run; its
    vocabulary must equal the run's.
    """
    cfg = lm_run_config(run_dir, device)
    if cfg.threads:  # as in training (the cpu preset: one thread, fast on a shared machine)
        torch.set_num_threads(cfg.threads)
    if corpus is None:
        checkpoint_path(run_dir, checkpoint)  # a missing checkpoint before a long read of the data
        if data is not None:
            cfg.data = str(data)
            if (Path(run_dir) / VOCAB_FILE).is_file():  # the run's tokenizer, also where config.json left it to auto
                cfg.tokenizer = LMVocab.load(Path(run_dir) / VOCAB_FILE).tokenizer
        corpus = load_lm_data(cfg)
    cfg, _, model = load_lm_model(run_dir, checkpoint, device=device, corpus=corpus)
    return cfg, corpus, model


def evaluate_lm_run(run_dir: Path, split: str = "test", mode: str | None = None, *, checkpoint: str = "best",
                    context: int | None = None, batch_size: int | None = None, device: str | None = None,
                    corpus: LMCorpus | None = None, data: str | Path | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Evaluate a run's checkpoint on ``split`` with :func:`evaluate_lm`.

    ``mode`` None: the paper's protocol for the run (``carry`` for carried-state runs, else ``sliding``).
    ``context`` None: ``tgt_len`` for ``sliding`` (the training context), ``eval_tgt_len`` otherwise.
    ``data``: the corpus directory when it moved (see :func:`load_lm_run`).
    """
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split: expected one of ['train', 'valid', 'test'], got {split!r}")
    if mode is not None and mode not in LM_EVAL_MODES:
        raise ValueError(f"mode: expected one of {list(LM_EVAL_MODES)}, got {mode!r}")
    if context is not None:
        check_positive_int("context", context)
    if batch_size is not None:
        check_positive_int("batch_size", batch_size)
    cfg, corpus, model = load_lm_run(run_dir, checkpoint, device=device, corpus=corpus, data=data)
    mode = mode or cfg.paper_protocol()
    context = context or (cfg.tgt_len if mode == "sliding" else cfg.eval_tgt_len)
    if mode == "segments" and batch_size is None:
        batch_size = cfg.eval_batch_size
    out = evaluate_lm(model, corpus.split(split), mode, context=context, batch_size=batch_size,
                      device=cfg.device, progress=progress)
    return {"split": split, "checkpoint": checkpoint, **out}


def generate_from_run(run_dir: Path, prompt: str, max_tokens: int, temperature: float = 1.0,
                      top_k: int | None = None, seed: int | None = None, *, checkpoint: str = "best",
                      device: str | None = None) -> Generation:
    """:func:`generate` with the trained model of a run directory (its data is not needed)."""
    check_positive_int("max_tokens", max_tokens)
    cfg, vocab, model = load_lm_model(run_dir, checkpoint, device=device)
    if cfg.threads:  # as in training
        torch.set_num_threads(cfg.threads)
    return vocab.generate(model, prompt, max_tokens, temperature, top_k, seed)
