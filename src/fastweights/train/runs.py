"""Run directories: resolved config, metadata, metrics CSV (+ TensorBoard when installed), checkpoints.

A run directory holds::

    config.json     the resolved configuration
    meta.json       versions, git revision, command line, seed, machine, start time
    metrics.csv     one row per evaluation (appended; truncated to the checkpoint on resume)
    last.pt         the latest checkpoint (written atomically)
    best.pt         the best-validation checkpoint (written atomically)
    results.json    final metrics (written at the end)
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
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
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint: no such file: {path}")
    return torch.load(path, map_location=map_location, weights_only=False)


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

    from .. import __version__

    return {
        "fastweights": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "git_revision": git_revision(), "command": list(sys.argv if command is None else command), "seed": seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
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
