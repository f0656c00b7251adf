"""Run directories: resolved config, metadata, metrics CSV (+ TensorBoard when installed), checkpoints.

A run directory holds::

    config.json     the resolved configuration
    meta.json       versions, git revision, command line, seed, machine, start time, run_format
    vocab.json      LM runs: the vocabulary, level and tokenizer; algorithmic runs: the input/output vocabularies
    env.json        RL runs: the environment and its observation and action spaces
    metrics.csv     one row per evaluation (appended; truncated to the checkpoint on resume)
    last.pt         the latest checkpoint (written atomically)
    best.pt         the best-validation checkpoint (written atomically)
    results.json    final metrics (written at the end)
    .lock           the owner of the directory while a run trains (:class:`RunLock`)

``vocab.json`` / ``env.json`` make a run usable without its data. ``docs/runs.md`` describes every file.

This module opens a run directory for training (checks, lock, ``config.json``, stale temporary files) and reads one
back; the pieces it uses live beside it and are importable from here too: atomic files and JSON (:mod:`.files`),
checkpoints (:mod:`.checkpoints`), ``metrics.csv`` (:mod:`.metrics`) and the lock (:mod:`.lock`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .checkpoints import (  # noqa: F401  (a run directory's checkpoints, read and written here by name)
    TrainingDiverged,
    checkpoint_path,
    diverged,
    load_checkpoint,
    nonfinite_parameter,
    restoring,
    save_checkpoint,
    save_good_checkpoint,
)
from .files import atomic_write_bytes, json_text, read_json, read_json_file, write_json  # noqa: F401
from .interrupt import interrupted
from .lock import LOCK_FILE, RunDirLocked, RunLock  # noqa: F401
from .metrics import MetricsLog  # noqa: F401
from .progress import plural

#: The layout of the run directories this version writes (``meta.json``'s ``run_format``). Directories of a larger
#: number come from a newer fastweights.
RUN_FORMAT = 2


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory, after checking that this version can read the directory.

    Raises ``FileNotFoundError`` (not a run directory) or a one-line ``ValueError`` (a newer run format, an unreadable
    ``config.json``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"run_dir: {run_dir} is not a run directory (no config.json)")
    # meta.json is written when training starts: a run stopped before (while reading its data) has none yet
    meta = read_json_file(run_dir / "meta.json", "run_dir") if (run_dir / "meta.json").is_file() else None
    found = meta.get("run_format") if isinstance(meta, dict) else meta
    if meta is not None and (not isinstance(found, int) or isinstance(found, bool) or found != RUN_FORMAT):
        newer = isinstance(found, int) and not isinstance(found, bool) and found > RUN_FORMAT
        raise ValueError(f"run_dir: {run_dir} has run_format {found!r} (meta.json), "
                         + (f"written by a newer fastweights ({meta.get('fastweights')}); this fastweights "
                            f"{_version()} reads run format {RUN_FORMAT}: upgrade fastweights" if newer else
                            f"not a run directory of this fastweights (run format {RUN_FORMAT})"))
    config = read_json_file(run_dir / "config.json", "run_dir")
    if not isinstance(config, dict):
        raise ValueError(f"run_dir: {run_dir / 'config.json'} is not a JSON object")
    return config


def vocab_difference(what: str, run: list[str], data: list[str]) -> str | None:
    """None when the two token lists are equal, else one line saying how the data's ``what`` differs from the run's."""
    if run == data:
        return None
    i = next((i for i, (a, b) in enumerate(zip(run, data)) if a != b), min(len(run), len(data)))
    at = (f"first difference at index {i}: {data[i]!r} instead of {run[i]!r}" if i < min(len(run), len(data))
          else f"the same first {i} tokens")
    return f"{what}: {len(data)} tokens instead of the run's {len(run)}, {at}"


def _version() -> str:
    from .. import __version__

    return __version__


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_metadata(seed: int, command: list[str] | None = None) -> dict[str, Any]:
    import numpy

    return {
        "fastweights": _version(), "torch": torch.__version__, "numpy": numpy.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "git_revision": git_revision(), "command": list(sys.argv if command is None else command), "seed": seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "run_format": RUN_FORMAT,
    }


def continues_from_checkpoint(run_dir: Path, resume: bool, resume_command: str) -> bool:
    """Check ``run_dir`` before a run starts; returns whether training continues from its ``last.pt``.

    A fresh run refuses a directory that holds a checkpoint (it names the command that continues it). A directory
    with a ``config.json`` but no checkpoint yet (a run stopped before its first one) holds nothing to keep: a fresh
    run reuses it, and a resumed one starts from the beginning.
    """
    run_dir = Path(run_dir)
    has_checkpoint = (run_dir / "last.pt").is_file()
    if resume:
        if not (run_dir / "config.json").is_file():
            raise FileNotFoundError(f"resume: {run_dir} is not a run directory (no config.json)")
        return has_checkpoint
    if has_checkpoint:
        raise FileExistsError(f"run_dir: {run_dir} already holds a run; continue it with: {resume_command}; or "
                              f"choose another --run-dir")
    return False


# ----------------------------------------------------------------------------------------------------------------
# Owning a run directory: the lock, unique default names, temporary files of interrupted writes
# ----------------------------------------------------------------------------------------------------------------


# The temporary files of atomic_write_bytes (mkstemp: ".<name>." + 8 characters of [a-z0-9_]) for the files a run
# directory holds; anything else starting with a dot is not ours to remove.
_TEMP_FILE = re.compile(r"\.(last\.pt|best\.pt|step-\d+\.pt|[A-Za-z_]+\.json|metrics\.csv)\.[a-z0-9_]{8}")


def remove_stale_temp_files(run_dir: Path, quiet: bool = False) -> list[str]:
    """Remove the temporary files that writes killed half way (``kill -9``, a power cut) left in ``run_dir``; call
    it with the directory's :class:`RunLock` held, when no write of this directory can be in progress. Returns the
    names removed (and says so unless ``quiet``)."""
    run_dir = Path(run_dir)
    names = sorted(p.name for p in run_dir.iterdir() if _TEMP_FILE.fullmatch(p.name) and p.is_file()) \
        if run_dir.is_dir() else []
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(run_dir / name)
    if names and not quiet:
        print(f"note: {run_dir}: removed {plural(len(names), 'temporary file')} left by an interrupted write: "
              f"{', '.join(names)}", file=sys.stderr, flush=True)
    return names


def unique_run_dir(base: Path) -> Path:
    """Create and return a new directory ``base`` (or ``base-2``, ``base-3``, ... when that exists): the default run
    directory, whose name holds the start time to the second, stays unique for launches in the same second."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"run_dir: no free name {base}-<N> (N < 10000)")


def open_run(run_dir: Path, resume: bool, resume_command: str, config: dict[str, Any], *, quiet: bool = False,
             lock: bool = True) -> tuple[contextlib.AbstractContextManager[Any], bool]:
    """Take a run directory for training: check it (:func:`continues_from_checkpoint`), create it, lock it
    (:class:`RunLock`; ``lock=False``: the caller is not the directory's owner, e.g. a torchrun rank other than 0)
    and remove the temporary files of writes a killed run left. A run that starts from the beginning writes its
    ``config`` as ``config.json`` first, so that a run stopped while its data load can be resumed.

    Returns ``(lock, continues)``: run the training inside ``with lock:``, which releases it (a no-op context for
    ``lock=False``); ``continues``: whether training continues from ``last.pt``."""
    run_dir = Path(run_dir)
    continues = continues_from_checkpoint(run_dir, resume, resume_command)  # refuse before creating anything
    if not lock:
        return contextlib.nullcontext(), continues
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise PermissionError(f"run_dir: cannot create {run_dir} (permission denied)") from None
    owner = RunLock(run_dir, quiet=quiet)
    owner.acquire()
    try:
        continues = continues_from_checkpoint(run_dir, resume, resume_command)  # again: now that it is ours
        if not os.access(run_dir, os.W_OK):
            raise PermissionError(f"run_dir: {run_dir} is not writable (permission denied)")
        remove_stale_temp_files(run_dir, quiet=quiet)
        if (run_dir / "config.json").is_file() and not continues and not quiet:
            print(f"note: {run_dir} holds no checkpoint yet: the run starts there from the beginning", flush=True)
        if not continues:
            write_json(run_dir / "config.json", config)
    except BaseException:
        owner.release()
        raise
    return owner, continues


@contextlib.contextmanager
def before_first_step(run_dir: Path, again: str, where: str = "before the first training step") -> Iterator[None]:
    """Building the data and model of a run: Ctrl-C here stops the run with nothing to save (the
    :class:`~fastweights.runs.interrupt.Interrupted` says how to start it again)."""
    try:
        yield
    except KeyboardInterrupt as e:
        raise interrupted(e, where, False, Path(run_dir) / "last.pt", again) from None


def default_run_dir(cfg: Any, preset: str | None, what: str) -> Path:
    """A new run directory of ``cfg`` (any task) without ``--run-dir``:
    ``<out_dir>/<task>-<what>-<model>-<preset>-<time>`` (``-2``, ... for launches in the same second), where
    ``what`` says what the task runs on (:meth:`fastweights.tasks.Task.run_label`: the corpus, the environment, the
    depth)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    preset_name = Path(preset).stem if preset and preset.endswith(".json") else preset
    return unique_run_dir(Path(cfg.out_dir) / f"{cfg.task}-{what}-{cfg.model}-{preset_name or 'default'}-{stamp}")
