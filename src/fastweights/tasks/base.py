"""What a task declares: :class:`Task` (configuration, command-line flags, training, evaluation, loading, the score a
grid compares) and :class:`Loaded` (a trained model and what using it needs).

A task is a subclass of :class:`Task` with its class attributes set and its methods written; an instance of it
registered with :func:`fastweights.tasks.register_task` is what ``fastweights train/eval/compare/export``,
:func:`fastweights.load` and :func:`fastweights.from_pretrained` use: none of them names a task. The methods import
the task's training code when they are called, so that the command line starts without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..fields import ConfigError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Flag:
    """A flag of a task's ``train`` and ``compare`` sub-commands (and ``data``, for tasks that write data sets) that
    sets one key of its configuration: ``--num-vars 5`` is ``num_vars=5``, with precedence over the key's
    ``key=value`` override. ``switch``: a flag without a value that sets the key to true."""

    name: str
    key: str
    help: str
    type: type = str
    switch: bool = False
    commands: tuple[str, ...] = ("train", "compare", "data")
    compare_help: str | None = None  # the help text under ``compare`` when it differs

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclass
class Loaded:
    """A trained model and what using it needs. ``task``: the task's name; ``config``: the run's configuration;
    ``model``: the network in eval mode; ``source``: the run or export directory; ``checkpoint``: the checkpoint read
    (None for an export)."""

    task: str
    config: Any = field(repr=False)
    model: nn.Module = field(repr=False)
    source: str
    checkpoint: str | None

    def save_files(self, out_dir: Path) -> None:
        """Write what an export needs besides the configuration and the weights (a vocabulary, an environment
        spec) into ``out_dir``."""

    def export_keys(self) -> dict[str, Any]:
        """Keys the export's ``config.json`` carries besides the format, the task and the configuration."""
        return {}


class Task:
    """One task of ``fastweights train``: subclasses set the class attributes and write the methods that raise
    ``NotImplementedError`` here; the others have defaults that fit most tasks."""

    #: The task's name on the command line and in ``config.json`` (``task``).
    name: ClassVar[str]
    #: One line for ``fastweights train --help``.
    summary: ClassVar[str]
    #: Flags of ``train``/``compare``/``data`` that set configuration keys (``--depth``, ``--env``, ...).
    flags: ClassVar[tuple[Flag, ...]] = ()
    #: Options of ``fastweights eval`` this task takes besides ``--checkpoint`` and ``--device`` (argument names, e.g.
    #: ``split``, ``data``, ``mode``).
    eval_options: ClassVar[frozenset[str]] = frozenset()
    #: The checkpoints an evaluation or export may read, the first the default (``step-<N>`` allowed with ``step-``).
    checkpoints: ClassVar[tuple[str, ...]] = ("best", "last")
    #: What :meth:`score` is, as a progress line says it; whether a larger score is better.
    score_name: ClassVar[str] = "score"
    higher_is_better: ClassVar[bool] = True
    #: The ``metrics.csv`` columns that learning-curve figures draw by default.
    curve_metrics: ClassVar[tuple[str, ...]] = ("train_loss",)
    #: Whether ``fastweights data TASK`` writes the task's data sets (:meth:`write_data`).
    writes_data: ClassVar[bool] = False
    #: Whether ``fastweights generate`` continues prompts with the task's models (:meth:`generate`).
    generates: ClassVar[bool] = False

    # -- configuration -------------------------------------------------------------------------------------------

    def config_class(self) -> type:
        """The task's configuration dataclass: a ``task`` field, ``validate()``, and the fields of
        :class:`~fastweights.runs.config.RunOptions` (seed, device, threads, log_every_s, out_dir)."""
        raise NotImplementedError

    def resolve_config(self, preset: str | None, overrides: list[str], flags: dict[str, Any]) -> Any:
        """The validated configuration: dataclass defaults < ``<task>-<preset>.json`` < ``key=value`` overrides <
        ``flags`` (None = not given)."""
        from ..runs.config import resolve_fields

        return resolve_fields(self.config_class(), self.name, preset, overrides, flags)

    def config_from_dict(self, values: dict[str, Any], where: str = "config: ") -> Any:
        """The configuration a ``config.json`` holds, every value checked against its field's type; unknown keys
        are refused."""
        from ..runs.config import checked_fields

        cls = self.config_class()
        values = checked_fields(cls, values, where=where)
        if values.get("task", self.name) != self.name:
            raise ConfigError(f"{where}task: expected {self.name!r}, got {values['task']!r}")
        return cls(**{**values, "task": self.name})

    # -- training --------------------------------------------------------------------------------------------------

    def train(self, cfg: Any, run_dir: Path, *, resume: bool = False, command: list[str] | None = None
              ) -> dict[str, Any]:
        """Train (``resume``: continue the run in ``run_dir``) and return the results written to
        ``results.json``."""
        raise NotImplementedError

    def run_label(self, cfg: Any) -> str:
        """What a run is trained on, for the name of its default run directory (``<task>-<label>-<model>-...``)."""
        return "run"

    def describe(self, cfg: Any) -> list[str]:
        """``train --dry-run``: build the data and the model, and say what they are in lines (data, parameters)."""
        raise NotImplementedError

    def prepare(self, configs: list[Any]) -> None:
        """Before a grid trains several runs at a time: prepare the data every configuration needs once (parallel
        runs would otherwise race to write it)."""

    def write_data(self, cfg: Any, out_dir: Path) -> list[Path]:
        """``fastweights data TASK``: write the data sets in their official formats; returns the files."""
        raise NotImplementedError

    def checkpoint_types(self) -> list[Any]:
        """Types besides tensors and plain containers that the task's checkpoints hold (for
        :func:`~fastweights.runs.checkpoints.load_checkpoint`): by default the recurrent states of the models."""
        from ..models import state_types

        return state_types()

    # -- evaluation and loading ------------------------------------------------------------------------------------

    def check_checkpoint(self, run_dir: Path, checkpoint: str | None) -> str:
        """The checkpoint to read: ``checkpoint``, or the task's default; refuses one the task does not keep."""
        if checkpoint is None:
            return self.checkpoints[0]
        allowed = [c for c in self.checkpoints if c != "step-"]
        if checkpoint in allowed or ("step-" in self.checkpoints and checkpoint.startswith("step-")
                                     and checkpoint[5:].isdigit()):
            return checkpoint
        names = " or ".join(allowed + (["step-<N>"] if "step-" in self.checkpoints else []))
        raise ConfigError(f"--checkpoint: expected {names} for a {self.name} run, got {checkpoint!r}")

    def evaluate(self, run_dir: Path, checkpoint: str, device: str | None, options: dict[str, Any]
                 ) -> dict[str, Any]:
        """``fastweights eval``: the metrics of a run's checkpoint; ``options`` holds the :attr:`eval_options` given
        (None = not given)."""
        raise NotImplementedError

    def load(self, run_dir: Path, checkpoint: str, device: str) -> Loaded:
        """The trained model of a run directory, in eval mode on ``device``."""
        raise NotImplementedError

    def from_export(self, path: Path, cfg: Any) -> Loaded:
        """The model of an export directory (its configuration ``cfg`` already read and checked), built and filled
        with its weights from ``path / model.safetensors`` (:func:`fastweights.weights.load_module`)."""
        raise NotImplementedError

    def generate(self, run_dir: Path, prompt: str, max_tokens: int, temperature: float, top_k: int | None,
                 seed: int | None, checkpoint: str, device: str | None) -> Any:
        """``fastweights generate``: continue ``prompt`` with a run's model (tasks with :attr:`generates`)."""
        raise NotImplementedError

    # -- grids (fastweights compare) -------------------------------------------------------------------------------

    def score(self, results: dict[str, Any]) -> float:
        """The number a grid compares, from a run's ``results.json``."""
        raise NotImplementedError

    def summarize(self, model: str, runs: list[tuple[Any, Path, dict[str, Any]]]) -> dict[str, Any]:
        """One row of a grid's summary: the finished runs of one model, as ``(config, run_dir, results)``."""
        scores = [self.score(results) for _, _, results in runs]
        return {"model": model, "seeds": [cfg.seed for cfg, _, _ in runs], "score": scores,
                "run_dirs": [str(d) for _, d, _ in runs]}

    def format_table(self, preset: str | None, rows: list[dict[str, Any]], configs: list[Any]) -> str:
        """A Markdown table of :meth:`summarize`'s rows (``configs``: the grid's configurations)."""
        lines = [f"{self.name}, preset {preset}: {self.score_name} per seed", "", "| model | per seed |", "|---|---|"]
        lines += [f"| {r['model']} | {', '.join(f'{s:.4g}' for s in r['score'])} |" for r in rows]
        return "\n".join(lines)

    def extra_reports(self, rows: list[dict[str, Any]], out_dir: Path) -> dict[str, tuple[str, Any]]:
        """More views of a finished grid: ``{name: (Markdown text, JSON value)}`` (the text is printed and appended
        to ``summary.md``; the value goes to ``summary.json`` under ``name``). Figures go to ``out_dir``."""
        return {}

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def resolved_device(configured: str, device: str | None) -> str:
    """``device``, or else the configured device when this machine has it, else the CPU."""
    import torch

    from ..runs.config import check_device

    if device is not None:
        check_device(device)
        return device
    return "cpu" if str(configured).startswith("cuda") and not torch.cuda.is_available() else configured


def needed_file(path: Path, name: str) -> Path:
    """``path / name`` of an export directory, which must exist."""
    if not (Path(path) / name).is_file():
        raise FileNotFoundError(f"path: {path} is not a complete exported model (no {name})")
    return Path(path) / name
