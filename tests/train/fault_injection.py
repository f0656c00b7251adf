"""Faults injected at the operating-system calls under a run directory's writes, for the fault tests: in this
process (``arm(kind, arg, monkeypatch.setattr)``) or in a ``fastweights`` process of its own (``python -c DRIVER
ARGV...`` with ``FW_FAULT=kind:arg``).

kinds: ``kill-in-write:N`` / ``term-in-write:N`` (SIGKILL / SIGTERM inside the N-th checkpoint write, its data on
disk, before it replaces the checkpoint), ``wait-in-write:PATH`` (the first checkpoint write waits until PATH
exists), ``enospc-in-write:N`` (the N-th checkpoint write finds the disk full), ``read-only:DIR`` (writes under DIR
are refused with EACCES, as a read-only directory refuses them to anyone but root).
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import signal
import time
from collections.abc import Callable
from typing import Any

#: A process that arms FW_FAULT, then runs ``fastweights.cli.main(sys.argv[1:])``.
DRIVER = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from fault_injection import arm
arm(*os.environ.get("FW_FAULT", "").partition(":")[::2])
from fastweights.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _checkpoint_fd(fd: int) -> bool:
    name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    return name.startswith((".last.pt.", ".best.pt."))


def arm(kind: str, arg: str, setattr: Callable[[Any, str, Any], None] = setattr) -> None:
    """Install the fault ``kind`` (see the module docstring); ``setattr``: e.g. ``monkeypatch.setattr``."""
    if not kind:
        return
    count = [0]
    if kind in ("kill-in-write", "term-in-write", "wait-in-write"):
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            real_fsync(fd)
            if not _checkpoint_fd(fd):
                return
            count[0] += 1
            if kind == "wait-in-write":
                deadline = time.monotonic() + 120
                while count[0] == 1 and not os.path.exists(arg) and time.monotonic() < deadline:
                    time.sleep(0.05)
            elif count[0] == int(arg):
                os.kill(os.getpid(), signal.SIGKILL if kind == "kill-in-write" else signal.SIGTERM)

        setattr(os, "fsync", fsync)
    elif kind == "enospc-in-write":
        real_fdopen = os.fdopen

        class Full:
            def __init__(self, f: Any) -> None:
                self.f = f

            def write(self, data: bytes) -> int:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def __getattr__(self, name: str) -> Any:
                return getattr(self.f, name)

            def __enter__(self) -> Full:
                return self

            def __exit__(self, *exc: object) -> None:
                self.f.close()

        def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            f = real_fdopen(fd, *args, **kwargs)
            if _checkpoint_fd(fd):
                count[0] += 1
                if count[0] == int(arg):
                    return Full(f)
            return f

        setattr(os, "fdopen", fdopen)
    elif kind == "read-only":
        root = os.path.abspath(arg)

        def inside(path: Any) -> bool:
            p = os.path.abspath(os.fspath(path))
            return p == root or p.startswith(root + os.sep)

        def refuse(path: Any) -> None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

        real_open, real_os_open, real_unlink, real_mkdir, real_access = (builtins.open, os.open, os.unlink,
                                                                         os.mkdir, os.access)

        def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_os_open(path, flags, *args, **kwargs)

        def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if not isinstance(file, int) and inside(file) and any(c in mode for c in "wax+"):
                refuse(file)
            return real_open(file, mode, *args, **kwargs)

        def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
            if inside(path):
                refuse(path)
            real_unlink(path, *args, **kwargs)

        def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
            if inside(path):
                refuse(path)
            real_mkdir(path, *args, **kwargs)

        def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
            return False if inside(path) and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

        for module, name, fn in ((builtins, "open", open_), (io, "open", open_), (os, "open", os_open),
                                 (os, "unlink", unlink), (os, "mkdir", mkdir), (os, "access", access)):
            setattr(module, name, fn)
    else:
        raise ValueError(f"FW_FAULT: unknown fault {kind!r}")
