"""One training run in its directory: :class:`Run`, what every task's training loop uses of the run directory.

A loop opens its run with ``with Run(cfg, run_dir, resume=..., again=...) as run:`` and then asks the run for
everything that touches the directory: whether it continues from ``last.pt`` (:attr:`Run.continues`), the
checkpoint to continue from (:meth:`Run.load_last`), the metadata of a new run (:meth:`Run.begin`), the metrics
log (:meth:`Run.metrics`), checkpoints that are never saved with a NaN in them (:meth:`Run.save`), the error of a
diverged run (:meth:`Run.diverged`), Ctrl-C/SIGTERM held around an update (``run.signals.held()``) and turned into a
saved checkpoint and a resume command (:meth:`Run.stop`), and the results (:meth:`Run.finish`). The run knows no
task: the loop passes what is its own (the types its checkpoints hold, its metadata, its payload).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .directory import (
    MetricsLog,
    TrainingDiverged,
    before_first_step,
    diverged,
    load_checkpoint,
    open_run,
    restoring,
    run_metadata,
    save_good_checkpoint,
    write_json,
)
from .interrupt import Interrupted, StopSignals, save_and_stop


class Run:
    """A training run of configuration ``cfg`` (a dataclass with ``seed`` and ``threads``) in ``run_dir``.

    ``resume``: continue from ``last.pt`` (a directory without one starts from the beginning); ``again``: the command
    that resumes the run, named when it stops; ``owner=False``: a process that shares the directory without owning it
    (a torchrun rank other than 0: no lock, no files written); ``checkpoint_types``: the types besides tensors and
    plain containers the run's checkpoints hold (see :func:`~fastweights.runs.checkpoints.load_checkpoint`).

    Entering the run checks and locks the directory, writes ``config.json`` for a run that starts from the beginning,
    sets ``cfg.threads`` torch threads and catches Ctrl-C/SIGTERM until the block ends."""

    def __init__(self, cfg: Any, run_dir: Path, *, resume: bool = False, again: str, quiet: bool = False,
                 owner: bool = True, checkpoint_types: Sequence[Any] = ()) -> None:
        self.cfg, self.dir, self.again, self.quiet, self.owner = cfg, Path(run_dir), again, quiet, owner
        self._resume = resume
        self._types = list(checkpoint_types)
        self._stack: contextlib.ExitStack | None = None
        #: Whether training continues from ``last.pt`` (known once the run is entered).
        self.continues = False
        #: The Ctrl-C/SIGTERM handler of the run (``with run.signals.held():`` around an update).
        self.signals: StopSignals | None = None

    def __enter__(self) -> Run:
        stack = contextlib.ExitStack()
        lock, self.continues = open_run(self.dir, self._resume, self.again, dataclasses.asdict(self.cfg),
                                        quiet=self.quiet, lock=self.owner)
        stack.enter_context(lock)
        try:
            if self.cfg.threads:
                torch.set_num_threads(self.cfg.threads)
            self.signals = stack.enter_context(StopSignals())
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> bool:
        stack, self._stack = self._stack, None
        return bool(stack is not None and stack.__exit__(*exc))

    @property
    def last(self) -> Path:
        """The path of the checkpoint a resume continues from."""
        return self.dir / "last.pt"

    def preparing(self, where: str = "before the first training step") -> contextlib.AbstractContextManager[None]:
        """Around building the data and the model: Ctrl-C there stops the run with nothing to save."""
        return before_first_step(self.dir, self.again, where)

    def load_last(self, keys: tuple[str, ...], map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The checkpoint to continue from (``last.pt``), which must hold ``keys``."""
        return load_checkpoint(self.last, map_location, keys, self._types)

    @contextlib.contextmanager
    def restoring(self) -> Iterator[None]:
        """Around loading the checkpoint's states into the loop's objects: a state that does not fit is one error
        line naming the checkpoint."""
        with restoring(self.last):
            yield

    def begin(self, command: list[str] | None, **meta: Any) -> None:
        """A run that starts from the beginning: write ``meta.json`` (versions, machine, command, seed and the
        loop's ``meta``)."""
        if self.owner:
            write_json(self.dir / "meta.json", {**run_metadata(self.cfg.seed, command), **meta})

    def write(self, name: str, obj: Any) -> None:
        """Write a JSON file of the run (a vocabulary, an environment spec) atomically."""
        if self.owner:
            write_json(self.dir / name, obj)

    def metrics(self, tensorboard: bool = True) -> MetricsLog | None:
        """The run's ``metrics.csv`` (and TensorBoard log when installed); None in a process that does not own the
        run."""
        return MetricsLog(self.dir, tensorboard=tensorboard) if self.owner else None

    def save(self, name: str, model: torch.nn.Module, payload: dict[str, Any], at: str) -> None:
        """Write checkpoint ``name`` (``last.pt``, ``best.pt``, ``step-<N>.pt``) atomically, after checking that
        ``model`` holds no NaN or infinite parameter (a diverged run is never saved)."""
        save_good_checkpoint(model, self.dir, name, payload, at)

    def diverged(self, what: str, at: str) -> TrainingDiverged:
        """The error that stops a run whose loss or parameters turned NaN or infinite ``at`` a step."""
        return diverged(what, at, self.dir)

    def stop(self, e: BaseException, save: Callable[[], None] | None, where: str) -> Interrupted:
        """The error that ends a run stopped by Ctrl-C or SIGTERM ``e``: ``save()`` (None: nothing to save) writes
        ``last.pt`` first; its message says ``where`` the run stood and how to resume it."""
        return save_and_stop(e, self.signals, save, where, self.last, self.again)

    def finish(self, results: dict[str, Any]) -> None:
        """Write ``results.json``: the run is complete."""
        if self.owner:
            write_json(self.dir / "results.json", results)
