"""The lock of a run directory (``.lock``): one training at a time owns a directory, and a lock left by a dead
process (a kill, a crash) is taken over."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

#: The lock file of a run directory (``RunLock``); it exists while a process trains in the directory.
LOCK_FILE = ".lock"


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
