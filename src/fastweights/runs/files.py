"""The files of a run written so that a kill never leaves a torn one: :func:`atomic_write_bytes` (a temporary file
beside the target, synced and renamed into place) and JSON read and written with it (strict JSON: a non-finite number
is written as ``null``)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


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


def read_json_file(path: Path, argument: str) -> Any:
    """:func:`read_json` with a one-line ``ValueError`` naming ``argument`` and the file for text that is not JSON."""
    try:
        return read_json(path)
    except json.JSONDecodeError as e:
        raise ValueError(f"{argument}: {path} is not valid JSON ({e})") from None
