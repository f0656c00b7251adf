"""Progress display and the number formats of everything the commands print.

:class:`Progress` is an updating line on a terminal and plain periodic lines otherwise, with rate, elapsed time and
ETA. :class:`DurationEstimate` times the first updates of a run on the running machine and announces the estimated
duration. ``format_*`` are the one way numbers are printed: counts with thousands separators, other numbers with
four significant digits and no exponent in the usual ranges, durations as ``1h 02m``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


def format_count(n: int) -> str:
    """``470677`` -> ``470,677``."""
    return f"{int(n):,}"


def format_number(x: float) -> str:
    """Four significant digits: ``0.1235``, ``2.5e-05``; values from 1000 on as rounded counts (``10,820``)."""
    if isinstance(x, int) and not isinstance(x, bool):
        return format_count(x)
    if not math.isfinite(x):
        return str(x)
    if abs(x) >= 1000:
        return format_count(round(x))
    return f"{x:.4g}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 thread``, ``2 threads``, ``1,000 processes`` (``words``: the irregular plural)."""
    return f"{format_count(n)} {word if n == 1 else words or word + 's'}"


def format_duration(seconds: float) -> str:
    """``8.2s``, ``45s``, ``3m 10s``, ``1h 02m``, ``21d 04h``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def format_rate(per_second: float, unit: str) -> str:
    """``12.3 step/s``, or ``4.1 s/step`` for slow units."""
    if per_second <= 0 or not math.isfinite(per_second):
        return f"? {unit}/s"
    if per_second >= 1:
        return f"{format_number(per_second)} {unit}/s"
    return f"{format_number(1 / per_second)} s/{unit}"


class Progress:
    """``update(done, **fields)`` shows ``prefix done/total [bar] fields, rate, elapsed, ETA``; ``close()`` ends the
    line (a later ``update`` starts a new one, so one bar can span a whole run with lines printed in between).

    ``initial``: units already done when the bar starts (a resumed run); the rate and the ETA count only what this
    bar has seen. ``unit`` names what is counted (``step``, ``example``, ``case``). ``delay_s``: nothing is shown
    before that many seconds (a bar for what is usually quick stays silent unless it is not).
    """

    def __init__(self, total: int, prefix: str = "", stream: TextIO | None = None, every_s: float = 10.0,
                 initial: int = 0, unit: str = "step", delay_s: float = 0.0) -> None:
        self.total, self.prefix, self.unit = total, prefix, unit
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = 0.2 if self.tty else every_s
        self.last = -math.inf
        self.start = time.perf_counter()
        self.delay_s = delay_s
        self.initial = initial
        self.open_line = False

    def rate(self, done: int, now: float | None = None) -> float:
        """Units per second since the bar started."""
        seconds = (time.perf_counter() if now is None else now) - self.start
        return (done - self.initial) / seconds if seconds > 0 else 0.0

    def eta(self, done: int, now: float | None = None) -> float:
        rate = self.rate(done, now)
        return (self.total - done) / rate if rate > 0 else math.inf

    def update(self, done: int, **fields: float | str) -> None:
        now = time.perf_counter()
        if now - self.start < self.delay_s or (now - self.last < self.every_s and done < self.total):
            return
        self.last = now
        parts = [f"{k.replace('_per_s', '/s')} {format_number(v) if isinstance(v, (int, float)) else v}"
                 for k, v in fields.items()]
        if done > self.initial:
            parts.append(format_rate(self.rate(done, now), self.unit))
        parts.append(f"elapsed {format_duration(now - self.start)}")
        if done < self.total:
            parts.append(f"ETA {format_duration(self.eta(done, now))}" if done > self.initial else "ETA ?")
        width = len(str(self.total))
        frac = done / max(self.total, 1)
        bar = ("#" * int(20 * frac)).ljust(20) + " " if self.tty else ""
        line = f"{self.prefix} {done:>{width}}/{self.total} {bar}{', '.join(parts)}".strip()
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            self.open_line = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def advance(self, done: int, estimate: DurationEstimate, **fields: float | str) -> None:
        """A training loop's call after every update: :meth:`update`, then the run's estimated duration
        (:meth:`DurationEstimate.tick`) on a line of its own once it is ready."""
        self.update(done, **fields)
        line = estimate.tick(done)
        if line is not None:
            self.close()
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """End the current line (on a terminal); the next ``update`` is shown at once."""
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False
        self.last = -math.inf


class DurationEstimate:
    """The estimated duration of a run, from timing its first updates on the running machine.

    The first update is left out (it pays one-time costs: kernels compile, buffers grow); then updates are timed
    until ``min_updates`` (at most a quarter of those left) are done or ``min_seconds`` have passed. :meth:`tick`
    returns the announcement once, when the estimate is ready.
    """

    def __init__(self, total: int, done: int = 0, *, unit: str = "update", min_updates: int = 50,
                 min_seconds: float = 5.0, extra: str = "") -> None:
        self.total, self.unit, self.extra = total, unit, extra
        self.min_updates, self.min_seconds = min(min_updates, max(1, (total - done) // 4)), min_seconds
        self.first = done + 1  # the timing starts after this update
        self.t0: float | None = None
        self.done_line: str | None = None

    def tick(self, done: int) -> str | None:
        """Call after every update with the number done; returns the announcement when it is ready, else None."""
        if self.done_line is not None or done < self.first:
            return None
        if done >= self.total:  # finished before the estimate was ready: nothing left to estimate
            self.done_line = ""
            return None
        now = time.perf_counter()
        if self.t0 is None:
            self.t0 = now
            return None
        timed = done - self.first
        if timed < self.min_updates and now - self.t0 < self.min_seconds and done < self.total:
            return None
        per = (now - self.t0) / max(timed, 1)
        left = self.total - done
        self.done_line = (f"estimated duration: {format_duration(per * self.total)} in all, "
                          f"{format_duration(per * left)} to go ({format_count(self.total)} {self.unit}s at "
                          f"{format_number(per)} s per {self.unit}, timed over {plural(timed, self.unit)} on this "
                          f"machine{self.extra})")
        return self.done_line
