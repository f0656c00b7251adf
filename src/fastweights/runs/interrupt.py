"""Clean interrupts of training runs: Ctrl-C (SIGINT) or SIGTERM saves a checkpoint and ends with one line.

A training loop runs inside ``with StopSignals() as signals:``. A signal raises :class:`Signalled` (a
``KeyboardInterrupt``) at once, so that a long forward or backward pass is not waited for, except inside
``with signals.held():`` blocks (the optimiser step with the counters that go with it, a checkpoint being written):
there it is held until the block ends, so the loop's state is never half updated. A second signal while one is
held raises at once with ``forced`` set: the state may then be torn and the loop saves nothing.

The loop catches ``KeyboardInterrupt``, writes its checkpoint from the state at the last step boundary and raises
:class:`Interrupted`, whose message is the line to print: where the run stands and the command that resumes it.
The command line prints it and exits with status 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Signalled(KeyboardInterrupt):
    """Raised by :class:`StopSignals` when SIGINT or SIGTERM arrives; ``forced``: a second signal cut a held block
    short."""

    def __init__(self, signum: int, forced: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.forced = signum, forced


class Interrupted(KeyboardInterrupt):
    """A run stopped by an interrupt after saving what it could; ``str(e)`` is the one line to show the user."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.message, self.signum = message, signum

    def __str__(self) -> str:
        return self.message

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signum)


def signal_of(e: BaseException) -> int:
    """The signal behind an interrupt (SIGINT for a plain ``KeyboardInterrupt``)."""
    return getattr(e, "signum", signal.SIGINT)


def was_forced(e: BaseException) -> bool:
    return bool(getattr(e, "forced", False))


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopSignals:
    """Turns SIGINT and SIGTERM into :class:`Signalled` while active (main thread only; elsewhere a no-op), holding
    them inside :meth:`held` blocks. The previous handlers come back on exit."""

    def __init__(self) -> None:
        self._held = 0
        self._pending: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._held and self._pending is None:
            self._pending = signum
            return
        raise Signalled(signum, forced=self._held > 0)

    @contextmanager
    def held(self) -> Iterator[None]:
        """A block that a signal does not cut short: the signal is raised when it ends."""
        self._held += 1
        try:
            yield
        except BaseException:  # the exception in flight (a forced stop, an error) goes on; a held signal with it
            self._held -= 1
            self._pending = None
            raise
        self._held -= 1
        if not self._held and self._pending is not None:
            signum, self._pending = self._pending, None
            raise Signalled(signum)


def interrupted(e: BaseException, where: str, saved: bool, checkpoint: Path, resume_command: str) -> Interrupted:
    """The :class:`Interrupted` to raise once a loop has handled interrupt ``e``: ``where`` the run stands (e.g.
    ``at epoch 2/6, step 1,234/3,750``), whether ``checkpoint`` was just ``saved``, and how to resume."""
    signum = signal_of(e)
    how = signal_name(signum) + (" twice" if was_forced(e) else "")
    if saved:
        return Interrupted(f"interrupted ({how}) {where}: saved {checkpoint}; resume with: {resume_command}", signum)
    if checkpoint.is_file():
        return Interrupted(f"interrupted ({how}) {where}, not saved; resume from the last checkpoint with: "
                           f"{resume_command}", signum)
    return Interrupted(f"interrupted ({how}) {where}, before the first checkpoint; start again with: "
                       f"{resume_command}", signum)


def save_and_stop(e: BaseException, signals: StopSignals, save: Callable[[], None] | None, where: str,
                  checkpoint: Path, resume_command: str) -> Interrupted:
    """What a training loop does with interrupt ``e``: ``save()`` its checkpoint from the last step boundary
    (signals held; skipped when ``save`` is None or a second signal forced the stop mid-update) and return the
    :class:`Interrupted` to raise."""
    saved = save is not None and not was_forced(e)
    if saved:
        with signals.held():
            save()
    return interrupted(e, where, saved, checkpoint, resume_command)
