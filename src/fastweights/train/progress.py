"""A dependency-free progress display: an updating line on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(done, **fields)`` shows ``prefix done/total [fields]``; ``close()`` ends the line."""

    def __init__(self, total: int, prefix: str = "", stream: TextIO | None = None, every_s: float = 10.0) -> None:
        self.total, self.prefix = total, prefix
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = 0.2 if self.tty else every_s
        self.last = 0.0
        self.start = time.perf_counter()

    def update(self, done: int, **fields: float | str) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        parts = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        width = len(str(self.total))
        frac = done / max(self.total, 1)
        bar = ("#" * int(20 * frac)).ljust(20) if self.tty else ""
        line = f"{self.prefix} {done:>{width}}/{self.total} {bar} {parts} ({now - self.start:.0f} s)".rstrip()
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
