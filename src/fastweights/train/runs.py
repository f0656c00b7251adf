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

``vocab.json`` / ``env.json`` make a run usable without its data (format 2); runs of format 1 lack them and read
their data to rebuild the vocabularies. ``docs/runs.md`` describes every file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import pickle
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def atomic_write_bytes(path: Path, write) -> None:
    """Write via a temporary file in the same directory and ``os.replace`` it into place, so that a crash
    leaves either the old file or the new one, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600 files; give the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_mode(path: Path) -> int:
    """The mode of the existing ``path``, else that of a new file under the current umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without running code from the file.

    ``torch.load(weights_only=True)`` rebuilds tensors and plain containers only, plus the few types that this
    project's checkpoints hold (:func:`checkpoint_types`); anything else in the file is refused, so a checkpoint
    from elsewhere cannot execute code when loaded. Raises ``FileNotFoundError`` or a one-line ``ValueError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file: {path}")
    try:
        with _allowing(checkpoint_types()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()
        raise ValueError(f"checkpoint: {path} holds an object of a type that fastweights checkpoints do not use; "
                         f"refused to unpickle it ({reason[0] if reason else e})") from None
    except (RuntimeError, EOFError, OSError) as e:  # a torn or foreign file: torch's messages span lines
        raise ValueError(f"checkpoint: {path} is truncated or not a torch checkpoint "
                         f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None


def checkpoint_types() -> list[Any]:
    """The types besides tensors and plain containers that the checkpoints of this project hold: the recurrent
    states (named tuples) of carried LM and RL states, the RL metrics window, and the NumPy arrays and random
    generators of the snapshots of the RL memory tasks. Entries are classes or ``(object, "module.name")``."""
    import numpy as np
    from numpy.random import _pcg64, _pickle, bit_generator

    from ..layers.attention import KVCache
    from ..layers.lstm import LSTMState
    from ..models.sequence_model import ModelState
    from ..ops.states import DeltaDeltaState, DeltaLSTMState, DeltaRNNState, RecDeltaState
    from ..rl.envs import EpisodeStats
    from ..rl.train import _Window

    try:  # NumPy 2 moved numpy.core to numpy._core; accept arrays pickled under either name
        from numpy._core import multiarray
    except ImportError:  # NumPy 1
        from numpy.core import multiarray
    reconstruct = [(multiarray._reconstruct, f"{p}.multiarray._reconstruct") for p in ("numpy.core", "numpy._core")]
    return [
        ModelState, KVCache, LSTMState, DeltaRNNState, DeltaLSTMState, RecDeltaState, DeltaDeltaState, _Window,
        EpisodeStats, *reconstruct, np.ndarray, np.dtype, *{type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"},
        bit_generator.SeedSequence, bit_generator.__pyx_unpickle_SeedSequence, _pickle.__generator_ctor,
        _pickle.__bit_generator_ctor, _pcg64.PCG64,
    ]


@contextlib.contextmanager
def _allowing(types: list[Any]) -> Iterator[None]:
    """Allow ``types`` in ``torch.load(weights_only=True)`` for the duration (torch >= 2.5: scoped; torch 2.4: the
    process-wide list; older torch reads tensors and containers only)."""
    serialization = torch.serialization
    if hasattr(serialization, "safe_globals"):
        with serialization.safe_globals(types):
            yield
        return
    if hasattr(serialization, "add_safe_globals"):
        serialization.add_safe_globals(types)
    yield


#: The layout of the run directories this version writes (``meta.json``'s ``run_format``; absent = 1, the layout
#: before ``vocab.json`` and ``env.json``). Directories of a larger number come from a newer fastweights.
RUN_FORMAT = 2


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory, after checking that this version can read the directory.

    Raises ``FileNotFoundError`` (not a run directory) or a one-line ``ValueError`` (a newer run format, an unreadable
    ``config.json``).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"run_dir: {run_dir} is not a run directory (no config.json)")
    meta = read_json_file(run_dir / "meta.json", "run_dir") if (run_dir / "meta.json").is_file() else {}
    found = meta.get("run_format", 1) if isinstance(meta, dict) else 1
    if not isinstance(found, int) or isinstance(found, bool) or found > RUN_FORMAT:
        raise ValueError(f"run_dir: {run_dir} has run_format {found!r} (meta.json), written by a newer fastweights "
                         f"({meta.get('fastweights')}); this fastweights {_version()} reads run formats up to "
                         f"{RUN_FORMAT}: upgrade fastweights")
    config = read_json_file(run_dir / "config.json", "run_dir")
    if not isinstance(config, dict):
        raise ValueError(f"run_dir: {run_dir / 'config.json'} is not a JSON object")
    return config


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """``run_dir/<checkpoint>.pt`` for ``checkpoint`` = ``best``, ``last`` or ``step-<N>``, which must exist."""
    if not isinstance(checkpoint, str) or re.fullmatch(r"best|last|step-\d+", checkpoint) is None:
        raise ValueError(f"checkpoint: expected 'best', 'last' or 'step-<N>', got {checkpoint!r}")
    path = Path(run_dir) / f"{checkpoint}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in Path(run_dir).glob("*.pt"))
        raise FileNotFoundError(f"checkpoint: {path} does not exist (the run has {have or 'no checkpoint yet'})")
    return path


def read_json_file(path: Path, argument: str) -> Any:
    """:func:`read_json` with a one-line ``ValueError`` naming ``argument`` and the file for text that is not JSON."""
    try:
        return read_json(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{argument}: {path} is not valid JSON ({e})") from None


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


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


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


class MetricsLog:
    """Append-only metrics CSV (columns fixed by the first row) plus TensorBoard scalars if available."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:  # tensorboard is an optional extra
                self.writer = None

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def truncate(self, max_step: int) -> None:
        """Drop rows logged after ``max_step`` (they belong to work lost since the last checkpoint)."""
        rows = [r for r in self.rows() if int(r["step"]) <= max_step]
        if not rows:
            if self.path.exists():
                self.path.unlink()
            return
        fields = list(rows[0].keys())

        def write(f):
            text = _csv_text(fields, rows)
            f.write(text.encode())

        atomic_write_bytes(self.path, write)

    def log(self, row: dict[str, Any]) -> None:
        new = not self.path.exists()
        if new:
            fields = list(row.keys())
        else:
            with open(self.path, newline="") as f:
                fields = next(csv.reader(f))
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            if new:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k, "")) for k in fields})
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(k, v, int(row["step"]))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def _csv_text(fields: list[str], rows: list[dict[str, Any]]) -> str:
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


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
