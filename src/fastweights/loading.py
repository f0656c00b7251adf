"""Trained models out of their runs: :func:`load` a run directory, :func:`export` it as weights without pickles,
:func:`from_pretrained` an export. Also ``fastweights.load``, ``fastweights.export`` and
``fastweights.from_pretrained``.

An export directory holds::

    config.json          format, format_version, fastweights_version, task, train_config (the run's configuration);
                         language models also carry the keys transformers reads (model_type, vocab_size, ...)
    model.safetensors    the weights (safetensors format: no optimizer, no pickle; tied tensors once)
    vocab.json           LM: vocabulary, level and tokenizer; code-exec/ListOps: input and output vocabularies
    env.json             RL: the environment and its observation and action spaces
    tokenizer.json ...   LM, when the ``hf`` extra is installed: the vocabulary for ``AutoTokenizer``

:func:`from_pretrained` reads it without ``torch.load``; the model it builds computes what the run's checkpoint
computes, bit for bit.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .models import build_lm, build_model
from .rl.agent import Agent
from .rl.config import RLConfig
from .rl.train import ENV_FILE, EnvSpec, agent_config, env_spec, load_agent
from .runs.config import ALL_TASKS, check_device, checked_fields, config_class, config_to_dict
from .runs.directory import read_json_file, read_run_config, write_json
from .train.algorithmic import VOCAB_FILE as TASK_VOCAB_FILE
from .train.algorithmic import TaskVocab, load_algorithmic_model, model_config
from .train.config import ALGORITHMIC_TASKS, LMTrainConfig, TrainConfig
from .train.lm import VOCAB_FILE as LM_VOCAB_FILE
from .train.lm import Generation, LMVocab, lm_model_config, load_lm_model
from .weights import load_module, save_module

EXPORT_FORMAT = "fastweights-model"
#: The layout of export directories written by this version; larger numbers come from a newer fastweights.
EXPORT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: The keys of config.json that :func:`from_pretrained` requires, and the optional ones it reads.
_REQUIRED_KEYS = ("format", "format_version", "task", "train_config")
_OPTIONAL_KEYS = ("fastweights_version",)
#: Keys that transformers reads or writes in config.json (``fastweights.hf``): accepted and ignored here.
HF_KEYS = frozenset({"model_type", "architectures", "transformers_version", "dtype", "torch_dtype", "vocab_size",
                     "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "use_cache",
                     "output_hidden_states", "return_dict", "chunk_size_feed_forward", "is_encoder_decoder",
                     "id2label", "label2id", "problem_type"})


@dataclass
class Loaded:
    """A trained model and what using it needs. ``task``: ``code-exec``, ``listops``, ``lm`` or ``rl``; ``config``:
    the run's configuration; ``model``: the network in eval mode; ``source``: the run or export directory;
    ``checkpoint``: the checkpoint read (None for an export)."""

    task: str
    config: TrainConfig | LMTrainConfig | RLConfig = field(repr=False)
    model: nn.Module = field(repr=False)
    source: str
    checkpoint: str | None


@dataclass
class LoadedLM(Loaded):
    """A language model (:class:`~fastweights.models.lm.LanguageModel`) with its vocabulary and tokenisation."""

    vocab: LMVocab = field(repr=False)

    def generate(self, prompt: str = "", max_tokens: int = 100, temperature: float = 1.0, top_k: int | None = None,
                 seed: int | None = None) -> Generation:
        """Continue the text ``prompt`` by ``max_tokens`` tokens (``temperature`` 0: greedy; ``top_k``: sample among
        the k most likely; ``seed``: reproducible sampling). ``.text`` of the result is the continuation,
        ``.after(prompt)`` the prompt with it. Token-level decoding: ``self.model.generate(ids, n)``."""
        return self.vocab.generate(self.model, prompt, max_tokens, temperature, top_k, seed)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (lines joined by ``<eos>``), as the corpus was read."""
        return self.vocab.encode(text)

    def decode(self, ids: list[int] | Tensor) -> str:
        """The text of token ids."""
        return self.vocab.decode(ids)


@dataclass
class LoadedAlgorithmic(Loaded):
    """A code-execution or ListOps model (:class:`~fastweights.models.SequenceModel`) with its vocabularies."""

    vocab: TaskVocab = field(repr=False)

    @torch.no_grad()
    def predict(self, tokens: str | list[str]) -> list[str] | str:
        """The model's answer for one input (tokens, or a string of space-separated tokens): code execution, the
        output token at every position (``_`` = nothing printed); ListOps, the value of the expression."""
        if isinstance(tokens, str):
            tokens = tokens.split()
        index = {t: i for i, t in enumerate(self.vocab.input)}
        unknown = [t for t in tokens if t not in index]
        if unknown:
            raise ValueError(f"tokens: expected {self.task} tokens {self.vocab.input}, got unknown {unknown[:5]}")
        if not tokens:
            raise ValueError("tokens: expected at least one token, got none")
        device = next(self.model.parameters()).device
        src = torch.tensor([[index[t] for t in tokens]], device=device)
        if self.task == "code-exec":
            return [self.vocab.output[i] for i in self.model(src)[0][0].argmax(-1).tolist()]
        lengths = torch.tensor([len(tokens)], device=device)
        return self.vocab.output[int(self.model(src, lengths=lengths)[0][0].argmax())]


@dataclass
class LoadedAgent(Loaded):
    """An RL agent (:class:`~fastweights.rl.Agent`: ``initial_state``, ``act``) with its environment spec."""

    env: EnvSpec


def _device(configured: str, device: str | None) -> str:
    """``device``, or else the run's device when this machine has it, else the CPU."""
    if device is not None:
        check_device(device)
        return device
    return "cpu" if str(configured).startswith("cuda") and not torch.cuda.is_available() else configured


# ----------------------------------------------------------------------------------------------------------------
# Run directories
# ----------------------------------------------------------------------------------------------------------------


def load(run_dir: str | os.PathLike, checkpoint: str = "best", device: str | None = None) -> Loaded:
    """The trained model of a run directory of any task, in eval mode, with what using it needs.

    Returns a :class:`LoadedLM` (``.generate(prompt, ...)``, ``.vocab``), :class:`LoadedAlgorithmic`
    (``.predict(tokens)``, ``.vocab``) or :class:`LoadedAgent` (``.env``). ``checkpoint``: ``best`` or ``last``
    (RL runs keep ``last`` and ``step-<N>``; ``best`` reads ``last`` there). ``device`` None: the run's device
    when this machine has it, else the CPU. Nothing but the run directory is read, except for runs written before
    their vocabularies were stored with them (those read their data once).
    """
    run_dir = Path(run_dir)
    values = read_run_config(run_dir)
    task = values.get("task", "code-exec")
    device = _device(values.get("device", "cpu"), device)
    if task == "lm":
        cfg, vocab, model = load_lm_model(run_dir, checkpoint, device=device)
        return LoadedLM(task, cfg, model, str(run_dir), checkpoint, vocab)
    if task == "rl":
        checkpoint = "last" if checkpoint == "best" else checkpoint
        cfg, agent = load_agent(run_dir, checkpoint, device)
        return LoadedAgent(task, cfg, agent, str(run_dir), checkpoint, env_spec(run_dir, cfg))
    cfg, vocab, model = load_algorithmic_model(run_dir, checkpoint, device=device)
    return LoadedAlgorithmic(task, cfg, model, str(run_dir), checkpoint, vocab)


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------


def export(run_dir: str | os.PathLike, out_dir: str | os.PathLike, checkpoint: str = "best") -> Path:
    """Write the trained model of a run as an export directory (see the module docstring) and return its path.

    ``out_dir`` must not exist or be empty. The files are written to a temporary directory beside it and moved into
    place at the end, so an interrupted export leaves no half-written ``out_dir``.
    """
    return save_export(load(run_dir, checkpoint, device="cpu"), out_dir)


def save_export(loaded: Loaded, out_dir: str | os.PathLike) -> Path:
    """:func:`export` of a loaded model (e.g. one changed in Python after :func:`load`); see :func:`export`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"out_dir: {out_dir} already exists and is not an empty directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write_json(tmp / CONFIG_FILE, export_config(loaded))
        save_module(loaded.model, tmp / WEIGHTS_FILE, {"fastweights.task": loaded.task})
        if isinstance(loaded, LoadedLM):
            loaded.vocab.save(tmp / LM_VOCAB_FILE)
            try:
                from .hf import save_tokenizer
            except ImportError:  # the hf extra is optional: AutoTokenizer files only with it
                pass
            else:
                save_tokenizer(loaded.vocab, tmp)
        elif isinstance(loaded, LoadedAlgorithmic):
            loaded.vocab.save(tmp / TASK_VOCAB_FILE)
        elif isinstance(loaded, LoadedAgent):
            write_json(tmp / ENV_FILE, loaded.env.to_dict())
        if out_dir.exists():
            out_dir.rmdir()
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def export_config(loaded: Loaded) -> dict[str, Any]:
    """The ``config.json`` of an export: the format, the task, the run's configuration and, for language models, the
    keys that make the directory a transformers model (``fastweights.hf``)."""
    from . import __version__

    out: dict[str, Any] = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION,
                           "fastweights_version": __version__, "task": loaded.task,
                           "train_config": config_to_dict(loaded.config),
                           "model_type": "fastweights"}  # transformers then says which tasks it can load
    if isinstance(loaded, LoadedLM):
        out.update({"architectures": ["FastWeightsForCausalLM"],
                    "vocab_size": len(loaded.vocab.vocab), "bos_token_id": loaded.vocab.vocab.eos_id,
                    "tie_word_embeddings": loaded.model.config.tie_weight})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Loading an export
# ----------------------------------------------------------------------------------------------------------------


def read_export_config(path: str | os.PathLike) -> tuple[str, TrainConfig | LMTrainConfig | RLConfig]:
    """``(task, configuration)`` of an export directory, every key and value checked: an unknown or mistyped key, a
    newer format or an invalid configuration raises one ``ValueError`` line."""
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"path: {path} is not an exported model (no {CONFIG_FILE})")
    return check_export_config(read_json_file(file, "config"), f"config: {file}")


def check_export_config(values: Any, where: str = "config") -> tuple[str, TrainConfig | LMTrainConfig | RLConfig]:
    """:func:`read_export_config` of the values of a ``config.json``; errors start with ``where``."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} is not a JSON object")
    unknown = sorted(set(values) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS) - HF_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; expected {list(_REQUIRED_KEYS + _OPTIONAL_KEYS)} "
                         f"(and the transformers keys of language models)")
    missing = [k for k in _REQUIRED_KEYS if k not in values]
    if missing:
        raise ValueError(f"{where}: missing key {missing[0]!r}")
    if values["format"] != EXPORT_FORMAT:
        raise ValueError(f"{where}: format: expected {EXPORT_FORMAT!r}, got {values['format']!r}")
    version = values["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where}: format_version: expected a positive integer, got {version!r}")
    if version > EXPORT_VERSION:
        from . import __version__

        raise ValueError(f"{where}: format_version {version} was written by a newer fastweights "
                         f"({values.get('fastweights_version')}); this fastweights {__version__} reads versions up to "
                         f"{EXPORT_VERSION}: upgrade fastweights")
    task = values["task"]
    if task not in ALL_TASKS:
        raise ValueError(f"{where}: task: expected one of {list(ALL_TASKS)}, got {task!r}")
    train = values["train_config"]
    if not isinstance(train, dict):
        raise ValueError(f"{where}: train_config: expected a JSON object, got {type(train).__name__}")
    checked = checked_fields(config_class(task), train, where=f"{where}: train_config: ", strict=True)
    if checked.get("task", task) != task:
        raise ValueError(f"{where}: train_config: task {checked['task']!r} differs from the export's task {task!r}")
    return task, config_class(task)(**{**checked, "task": task})


def from_pretrained(path: str | os.PathLike, device: str | None = None) -> Loaded:
    """Load an export directory written by :func:`export`: a :class:`LoadedLM`, :class:`LoadedAlgorithmic` or
    :class:`LoadedAgent`, in eval mode. (The ``config.json`` and ``model.safetensors`` that transformers'
    ``save_pretrained`` writes for a ``fastweights.hf`` model are read too; the vocabulary file must be beside them.)

    Reads JSON and a safetensors file only (no ``torch.load``, no pickle). ``device`` None: the run's device when this
    machine has it, else the CPU. Every check (configuration, vocabularies, weight names, shapes and dtypes) runs
    before the weights are loaded; a problem raises one ``ValueError`` line.
    """
    path = Path(path)
    task, cfg = read_export_config(path)
    cfg.device = _device(cfg.device, device)
    cfg.validate()
    if task == "lm":
        vocab = LMVocab.load(_needed(path, LM_VOCAB_FILE))
        model: nn.Module = build_lm(lm_model_config(cfg, len(vocab.vocab)))
    elif task in ALGORITHMIC_TASKS:
        vocab = TaskVocab.load(_needed(path, TASK_VOCAB_FILE))
        if vocab.task != task:
            raise ValueError(f"vocabulary: {path / TASK_VOCAB_FILE} belongs to a {vocab.task} model, not {task}")
        model = build_model(model_config(cfg, vocab))
    else:
        spec = EnvSpec.from_dict(read_json_file(_needed(path, ENV_FILE), "env"), str(path / ENV_FILE))
        model = Agent(agent_config(cfg, spec))
    load_module(model, _needed(path, WEIGHTS_FILE))
    model = model.to(cfg.device).eval()
    if task == "lm":
        return LoadedLM(task, cfg, model, str(path), None, vocab)
    if task == "rl":
        return LoadedAgent(task, cfg, model, str(path), None, spec)
    return LoadedAlgorithmic(task, cfg, model, str(path), None, vocab)


def _needed(path: Path, name: str) -> Path:
    if not (path / name).is_file():
        raise FileNotFoundError(f"path: {path} is not a complete exported model (no {name})")
    return path / name


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like an export directory (a ``model.safetensors`` beside a ``config.json``)."""
    return (Path(path) / WEIGHTS_FILE).is_file() and (Path(path) / CONFIG_FILE).is_file()
