"""The data of the algorithmic benchmarks as training reads them (paper.md C.1, C.2): generated into a cache on first
use or read from the official files, encoded into tensors, with the run's vocabularies (:class:`TaskVocab`,
``vocab.json``)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ..data import code_execution, listops
from ..runs.directory import read_json_file, vocab_difference, write_json
from ..runs.progress import Progress
from .config import ALGORITHMIC_TASKS, TrainConfig

#: The file of a run (and of an export) that holds its vocabularies (:class:`TaskVocab`).
VOCAB_FILE = "vocab.json"
TASK_VOCAB_FORMAT = "fastweights-task-vocab"

@dataclass
class Split:
    """One encoded split: ``src [N, T]`` (padded with 0), ``tgt`` (``[N, T]`` padded with -1 for code
    execution, ``[N]`` labels for ListOps) and ``lengths [N]``."""

    src: Tensor
    tgt: Tensor
    lengths: Tensor


@dataclass
class TaskVocab:
    """The vocabularies of an algorithmic run (its ``vocab.json``): ``input`` tokens in id order and ``output`` the
    class names (code execution: ``_`` and the printed values, in the order the data first shows them; ListOps: the
    digits ``0``..``9``)."""

    task: str
    input: list[str]
    output: list[str]

    @property
    def vocab_size(self) -> int:
        return len(self.input)

    @property
    def num_classes(self) -> int:
        return len(self.output)

    @property
    def noop_index(self) -> int | None:
        """Code execution: the class of ``_`` (nothing printed); None for ListOps."""
        return self.output.index(code_execution.NOOP) if self.task == "code-exec" else None

    def difference(self, data: TaskVocab) -> str | None:
        """None when ``data`` (the vocabularies of a data set) equals these, else one line saying how they differ."""
        return vocab_difference("input vocabulary", self.input, data.input) \
            or vocab_difference("output classes", self.output, data.output)

    def to_dict(self) -> dict[str, Any]:
        return {"format": TASK_VOCAB_FORMAT, "version": 1, "task": self.task, "input": list(self.input),
                "output": list(self.output)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "vocabulary") -> TaskVocab:
        if not isinstance(data, dict) or data.get("format") != TASK_VOCAB_FORMAT:
            raise ValueError(f"{source}: not a fastweights task vocabulary (expected a JSON object with "
                             f"format={TASK_VOCAB_FORMAT!r})")
        if data.get("version") != 1:
            raise ValueError(f"{source}: unsupported task vocabulary version {data.get('version')!r} (expected 1)")
        if data.get("task") not in ALGORITHMIC_TASKS:
            raise ValueError(f"{source}: task: expected one of {list(ALGORITHMIC_TASKS)}, got {data.get('task')!r}")
        for key in ("input", "output"):
            tokens = data.get(key)
            if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens) \
                    or len(set(tokens)) != len(tokens):
                raise ValueError(f"{source}: {key}: expected a non-empty list of distinct strings")
        vocab = cls(data["task"], data["input"], data["output"])
        if vocab.task == "code-exec" and code_execution.NOOP not in vocab.output:
            raise ValueError(f"{source}: output: the code-execution classes must include {code_execution.NOOP!r}")
        return vocab

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> TaskVocab:
        return cls.from_dict(read_json_file(Path(path), "vocabulary"), str(path))


@dataclass
class TaskData:
    splits: dict[str, Split]
    vocab: TaskVocab
    source: str  # where the data came from

    @property
    def vocab_size(self) -> int:
        return self.vocab.vocab_size

    @property
    def num_classes(self) -> int:
        return self.vocab.num_classes

    @property
    def noop_index(self) -> int | None:
        """Code execution: index of "_" (for the print-token accuracy)."""
        return self.vocab.noop_index


def cache_dir() -> Path:
    return Path(os.environ.get("FASTWEIGHTS_CACHE", Path.home() / ".cache" / "fastweights"))


def _generated_dir(cfg: TrainConfig) -> Path:
    sizes = f"{cfg.train_size}-{cfg.valid_size}-{cfg.test_size}-seed{cfg.data_seed}"
    if cfg.task == "code-exec":
        return cache_dir() / "data" / f"code-exec-vars{cfg.num_vars}-len{cfg.code_length}-{sizes}"
    capped = "" if cfg.max_length is None else f"-max{cfg.max_length}"
    return cache_dir() / "data" / f"listops-depth{cfg.depth}{capped}-{sizes}"


def write_task_data(cfg: TrainConfig, out_dir: Path, *, progress: bool = False) -> list[Path]:
    """Generate the data of ``cfg`` and write it in the official file format (``progress``: a progress line on
    stderr)."""
    sizes = (cfg.train_size, cfg.valid_size, cfg.test_size)
    what = "programs" if cfg.task == "code-exec" else "trees"
    bar = Progress(sum(sizes), prefix=f"generating {cfg.task} {what}", stream=sys.stderr, unit=what[:-1],
                   delay_s=1.0) if progress else None
    update = bar.update if bar is not None else None
    if cfg.task == "code-exec":
        data = code_execution.generate_dataset(cfg.num_vars, sizes, seed=cfg.data_seed, code_length=cfg.code_length,
                                               progress=update)
        paths = code_execution.write_dataset(data, out_dir, cfg.num_vars)
    else:
        data = listops.generate_dataset(cfg.depth, sizes, seed=cfg.data_seed, progress=update,
                                        max_length=cfg.max_length)
        paths = listops.write_dataset(data, out_dir, cfg.depth)
    if bar is not None:
        bar.close()
    return paths


def given_data_dir(cfg: TrainConfig) -> Path:
    """``cfg.data`` (not None), which must be a directory."""
    data_dir = Path(cfg.data)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data: no such directory: {data_dir}")
    return data_dir


def load_task_data(cfg: TrainConfig, vocab: TaskVocab | None = None, *, progress: bool = False) -> TaskData:
    """Read ``cfg.data`` (official format) or generate into the cache on first use (``progress``: a progress line
    on stderr while generating), then encode.

    ``vocab``: the run's vocabularies; data whose vocabularies differ are refused (one ``ValueError`` line).
    """
    if cfg.data is not None:
        data_dir = given_data_dir(cfg)
    else:
        data_dir = _generated_dir(cfg)
        if not (data_dir / ".complete").exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            write_task_data(cfg, data_dir, progress=progress)
            (data_dir / ".complete").touch()  # marks a finished generation (an interrupted one is redone)
    if cfg.task == "code-exec":
        raw = code_execution.read_dataset(data_dir, cfg.num_vars)
        # Vocabularies in order of first appearance, training split first, as the official loader builds them
        # from the training file. Tokens that only occur in valid/test (possible with tiny data sets) are
        # appended after them; with the official data there are none, so the sizes are the paper's.
        found = TaskVocab(cfg.task, *code_execution.build_vocab(raw["train"] + raw["valid"] + raw["test"]))
    else:
        raw = listops.read_dataset(data_dir, cfg.depth)
        found = TaskVocab(cfg.task, listops.input_vocab(), [str(c) for c in range(listops.NUM_CLASSES)])
    if vocab is not None and (diff := vocab.difference(found)) is not None:
        raise ValueError(f"data: the data in {data_dir} do not match the run's vocabularies ({diff})")
    if cfg.task == "code-exec":
        splits = {name: Split(*code_execution.encode(examples, found.input, found.output))
                  for name, examples in raw.items()}
    else:
        splits = {name: Split(*listops.encode(examples, found.input)) for name, examples in raw.items()}
    return TaskData(splits, found, str(data_dir))
