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
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pickle
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .interrupt import interrupted
from .progress import plural


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None and e.errno is not None:  # a write: say which file
            raise OSError(e.errno, os.strerror(e.errno), str(path)) from None
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
    """Write ``payload`` to ``path`` atomically (:func:`atomic_write_bytes`). A failing write (a full disk) raises
    the ``OSError`` itself, e.g. ``No space left on device``, where torch would report a position mismatch."""

    def write(f) -> None:
        writer = _ErrorKeepingWriter(f)
        try:
            torch.save(payload, writer)
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise

    atomic_write_bytes(path, write)


class _ErrorKeepingWriter:
    """A binary file's ``write`` that keeps the first ``OSError`` it raised (torch's writer turns it into a
    ``RuntimeError`` that does not say why)."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", keys: tuple[str, ...] = (),
                    types: Sequence[Any] = ()) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without running code from the file.

    ``torch.load(weights_only=True)`` rebuilds tensors and plain containers only, plus the ``types`` the caller's
    checkpoints hold (classes or ``(object, "module.name")``: recurrent states, a task's own records; see
    :meth:`fastweights.tasks.Task.checkpoint_types`); anything else in the file is refused, with the risk named:
    this loader has no switch that unpickles arbitrary objects, so a checkpoint from elsewhere cannot execute code
    when loaded (whoever trusts such a file can read it with ``torch.load(path, weights_only=False)`` themselves).
    ``keys``: the entries the caller needs; a checkpoint without one of them is refused.
    Raises ``FileNotFoundError`` or a one-line ``ValueError`` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: no such file: {path}")
    try:
        with _allowing(list(types)):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()
        if "Unsupported operand" in str(e):  # a damaged pickle stream, not a foreign object
            raise ValueError(f"checkpoint: {path} is truncated, corrupt or not a torch checkpoint "
                             f"({reason[0] if reason else type(e).__name__})") from None
        raise ValueError(f"checkpoint: {path} holds an object of a type that fastweights checkpoints do not use; "
                         f"refused to unpickle it, since unpickling it could run code from the file "
                         f"({reason[0] if reason else e}); only if you trust the file, read it yourself with "
                         f"torch.load(path, weights_only=False)") from None
    except Exception as e:  # a torn, bit-flipped or foreign file fails in many ways inside torch
        text = str(e).strip().splitlines()
        raise ValueError(f"checkpoint: {path} is truncated, corrupt or not a torch checkpoint "
                         f"({text[0].split('. ')[0] if text else type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint: {path} holds a {type(ckpt).__name__}, not a fastweights checkpoint (a dict)")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint: {path} lacks {', '.join(map(repr, missing))} (it holds {sorted(ckpt)}): not a "
                         f"checkpoint of this kind of run, or written by another program")
    return ckpt


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


def json_text(obj: Any, indent: int | None = 2, sort_keys: bool = True) -> str:
    """``obj`` as strict JSON: NaN and infinities (JSON has none; ``json.dumps`` writes bare ``NaN``) become null."""
    return json.dumps(_finite(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, lambda f: f.write((json_text(obj) + "\n").encode()))


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


# ----------------------------------------------------------------------------------------------------------------
# Owning a run directory: the lock, unique default names, temporary files of interrupted writes
# ----------------------------------------------------------------------------------------------------------------

#: The lock file of a run directory (``RunLock``); it exists while a process trains in the directory.
LOCK_FILE = ".lock"

# The temporary files of atomic_write_bytes (mkstemp: ".<name>." + 8 characters of [a-z0-9_]) for the files a run
# directory holds; anything else starting with a dot is not ours to remove.
_TEMP_FILE = re.compile(r"\.(last\.pt|best\.pt|step-\d+\.pt|[A-Za-z_]+\.json|metrics\.csv)\.[a-z0-9_]{8}")


class TrainingDiverged(RuntimeError):
    """The loss or the parameters of a run became NaN or infinite; the run stopped without saving them (one line: the
    step and the checkpoint kept)."""


def nonfinite_parameter(model: torch.nn.Module) -> str | None:
    """The name of the first parameter of ``model`` holding a NaN or an infinity, else None (one sync)."""
    named = [(n, p) for n, p in model.named_parameters()]
    if not named:
        return None
    ok = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).tolist()
    return next((n for (n, _), good in zip(named, ok) if not good), None)


def diverged(what: str, at: str, run_dir: Path) -> TrainingDiverged:
    """The :class:`TrainingDiverged` to raise: ``what`` went non-finite ``at`` (e.g. ``step 12``); what the run
    kept."""
    kept = (f"the last good checkpoint {Path(run_dir) / 'last.pt'} is kept" if (Path(run_dir) / "last.pt").is_file()
            else "no checkpoint was written")
    return TrainingDiverged(f"training diverged: {what} at {at}; the run stopped, {kept}; lower the learning "
                            f"rate (lr) and start again")


def save_good_checkpoint(model: torch.nn.Module, run_dir: Path, name: str, payload: dict[str, Any], at: str
                         ) -> None:
    """:func:`save_checkpoint` to ``run_dir/name`` unless a parameter of ``model`` went non-finite: then raise
    :func:`diverged` (``at``: where the run stands, e.g. ``step 12``) and keep the checkpoint there is (a NaN model
    never replaces the last good one)."""
    if (bad := nonfinite_parameter(model)) is not None:
        raise diverged(f"parameter {bad} is not finite", at, run_dir)
    save_checkpoint(Path(run_dir) / name, payload)


@contextlib.contextmanager
def restoring(path: Path) -> Iterator[None]:
    """A block that restores training state from checkpoint ``path``: an entry of the wrong kind or shape (a
    checkpoint of another run, an edited file) becomes one ``ValueError`` line naming the file."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        text = str(e).strip().splitlines()
        raise ValueError(f"checkpoint: {path} does not fit this run ({type(e).__name__}: "
                         f"{text[0] if text else ''})") from None


class RunDirLocked(FileExistsError):
    """Another live process trains in the run directory (one line: the directory, the owner's pid, host, start)."""


class RunLock:
    """Exclusive ownership of a run directory for one training process (``with RunLock(run_dir):``).

    The lock is an ``fcntl.flock`` on ``run_dir/.lock``, held for as long as the process runs: the kernel releases
    it when the process ends in any way (``kill -9`` included), so a lock is never stale in the sense of blocking a
    new run. The file records the owner (``pid``, ``host``, ``started``) for the messages: a second process that
    finds the lock held refuses with them; one that finds the file of an owner that died without removing it takes
    the directory over and says so. Where ``flock`` is missing (Windows, some network file systems) the owner's pid
    is checked instead (a live pid on this host refuses; another host's lock is refused too, since its pid cannot be
    checked), which does not exclude two processes that start at the same moment.
    """

    def __init__(self, run_dir: Path, *, quiet: bool = False, argument: str = "run_dir") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.quiet, self.argument = quiet, argument  # argument: what messages call the directory
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if self._fd is None:  # open_run hands over a lock it already holds
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except PermissionError:
                raise PermissionError(f"{self.argument}: {self.run_dir} is not writable (permission denied)") from None
            try:
                if not _try_flock(fd):
                    raise RunDirLocked(self._held_message(_read_owner(fd)))
                if not _same_file(fd, self.path):  # removed by its releasing owner meanwhile: lock the new one
                    os.close(fd)
                    continue
                previous = _read_owner(fd)
                if previous is not None and not self.quiet:
                    print(f"note: {self.run_dir}: taking over the lock of process {previous.get('pid')} on "
                          f"{previous.get('host')} (started {previous.get('started')}), which ended without "
                          f"releasing it", file=sys.stderr, flush=True)
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, (json.dumps(owner) + "\n").encode())
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return

    def _held_message(self, owner: dict[str, Any] | None) -> str:
        who = (f"process {owner.get('pid')} on {owner.get('host')} (started {owner.get('started')})"
               if owner else "another process")
        flag = "--" + self.argument.replace("_", "-")
        return (f"{self.argument}: {self.run_dir} is in use by {who}: two runs cannot share a directory; wait for it "
                f"to end or choose another {flag}")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: a waiting process then sees another file and retries
        os.close(self._fd)
        self._fd = None


def _try_flock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; False when another process holds it."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except (ImportError, OSError):  # no flock here (Windows, some network file systems): judge the recorded pid
        owner = _read_owner(fd)
        return owner is None or not _alive(owner)
    return True


def _alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError):
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _read_owner(fd: int) -> dict[str, Any] | None:
    """The owner a lock file records (None for an empty file; ``{}`` for one that is not a record)."""
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 4096)
    if not data.strip():
        return None
    try:
        owner = json.loads(data)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


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
