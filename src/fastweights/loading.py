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
from pathlib import Path
from typing import Any

from .runs.config import config_to_dict
from .runs.directory import read_json_file, read_run_config, write_json
from .tasks import get_task
from .tasks.algorithmic import LoadedAlgorithmic
from .tasks.base import Loaded, resolved_device
from .tasks.lm import LoadedLM
from .tasks.rl import LoadedAgent
from .weights import save_module

__all__ = ["Loaded", "LoadedAgent", "LoadedAlgorithmic", "LoadedLM", "export", "from_pretrained", "is_export", "load",
           "read_export_config", "save_export"]

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
    task = get_task(values.get("task"), f"run_dir: {run_dir}: task")
    return task.load(run_dir, checkpoint, resolved_device(values.get("device", "cpu"), device))


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
        loaded.save_files(tmp)
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
    return {**out, **loaded.export_keys()}


# ----------------------------------------------------------------------------------------------------------------
# Loading an export
# ----------------------------------------------------------------------------------------------------------------


def read_export_config(path: str | os.PathLike) -> tuple[str, Any]:
    """``(task, configuration)`` of an export directory, every key and value checked: an unknown or mistyped key, a
    newer format or an invalid configuration raises one ``ValueError`` line."""
    path = Path(path)
    file = path / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"path: {path} is not an exported model (no {CONFIG_FILE})")
    return check_export_config(read_json_file(file, "config"), f"config: {file}")


def check_export_config(values: Any, where: str = "config") -> tuple[str, Any]:
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
    if not isinstance(task, str):
        raise ValueError(f"{where}: task: expected a task name, got {task!r}")
    spec = get_task(task, f"{where}: task")
    train = values["train_config"]
    if not isinstance(train, dict):
        raise ValueError(f"{where}: train_config: expected a JSON object, got {type(train).__name__}")
    if train.get("task", task) != task:
        raise ValueError(f"{where}: train_config: task {train['task']!r} differs from the export's task {task!r}")
    return task, spec.config_from_dict(train, f"{where}: train_config: ")


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
    cfg.device = resolved_device(cfg.device, device)
    cfg.validate()
    return get_task(task).from_export(path, cfg)


def is_export(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like an export directory (a ``model.safetensors`` beside a ``config.json``)."""
    return (Path(path) / WEIGHTS_FILE).is_file() and (Path(path) / CONFIG_FILE).is_file()
