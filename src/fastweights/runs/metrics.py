"""The metrics of a run: ``metrics.csv``, one row per evaluation (appended; truncated to the checkpoint on resume),
and TensorBoard events when ``tensorboard`` is installed."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .files import atomic_write_bytes


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
