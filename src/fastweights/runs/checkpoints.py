"""Checkpoints of a run: written atomically, never with a NaN or infinite parameter in them, and read without
running code from the file (``torch.load(weights_only=True)`` with only the types the caller's checkpoints hold)."""

from __future__ import annotations

import contextlib
import pickle
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write_bytes


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


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """``run_dir/<checkpoint>.pt`` for ``checkpoint`` = ``best``, ``last`` or ``step-<N>``, which must exist."""
    if not isinstance(checkpoint, str) or re.fullmatch(r"best|last|step-\d+", checkpoint) is None:
        raise ValueError(f"checkpoint: expected 'best', 'last' or 'step-<N>', got {checkpoint!r}")
    path = Path(run_dir) / f"{checkpoint}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in Path(run_dir).glob("*.pt"))
        raise FileNotFoundError(f"checkpoint: {path} does not exist (the run has {have or 'no checkpoint yet'})")
    return path


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
