"""Helpers shared by the task modules: split names, file errors, reading and writing text files, padding, metrics."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

#: Split names, in the order the official generators produce them (train -> valid -> test from one RNG).
SPLITS: tuple[str, str, str] = ("train", "valid", "test")

PathLike = str | os.PathLike


class DataFormatError(ValueError):
    """A malformed line in a dataset file; the message starts with ``<path>:<line>:`` (1-based line number).

    Subclasses ``ValueError`` so callers can catch either; ``path`` and ``line`` are kept as attributes for tools.
    """

    def __init__(self, path: PathLike, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}")

    def __reduce__(self) -> tuple[type, tuple[str, int, str]]:
        # Keep the error picklable (e.g. raised inside a DataLoader worker); the default would pass only the text.
        return (type(self), (self.path, self.line, self.message))


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise ``ValueError`` naming it."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    return split


def check_sizes(sizes: Sequence[int]) -> tuple[int, int, int]:
    """Validate a (train, valid, test) size triple of non-negative ints."""
    if len(sizes) != len(SPLITS):
        raise ValueError(f"sizes: expected {len(SPLITS)} values (train, valid, test), got {len(sizes)}")
    out = []
    for name, size in zip(SPLITS, sizes):
        # bool is an int subclass; True as a size is almost certainly a bug.
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"sizes: the {name} size must be a non-negative int, got {size!r}")
        out.append(size)
    return out[0], out[1], out[2]


def read_lines(path: Path) -> list[str]:
    """Read a text file as a list of lines without their line ends.

    Raises ``FileNotFoundError`` whose message names the path (clearer than the bare ``open`` error when a
    data directory is mis-typed).
    """
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        with path.open("r", encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise decode_error(path, exc) from None


def decode_error(path: Path, exc: UnicodeDecodeError) -> DataFormatError:
    """The error for a file that is not UTF-8: its first such line (the text layer decodes in blocks, not lines)."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as line_exc:
                return DataFormatError(path, number, f"not valid UTF-8 ({line_exc.reason} at byte {line_exc.start})")
    return DataFormatError(path, 1, f"not valid UTF-8 ({exc.reason})")


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write ``lines`` (each terminated by ``\\n``), replacing the file.

    The official generators open their files in append mode, so re-running them silently duplicates the data;
    we always overwrite instead. The write goes through a temporary file so an interrupted run leaves no half file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line)
            f.write("\n")
    tmp.replace(path)


def pad_sequences(seqs: Sequence[Sequence[int]], pad_value: int, pad_to: int | None = None) -> Tensor:
    """Stack integer sequences into a LongTensor ``[N, T]`` right-padded with ``pad_value``.

    ``T`` is the longest sequence (the official loaders pad to the longest sequence of the file) unless ``pad_to``
    is given, which must be at least that long.
    """
    longest = max((len(s) for s in seqs), default=0)
    width = longest if pad_to is None else pad_to
    if width < longest:
        raise ValueError(f"pad_to: {pad_to} is shorter than the longest sequence ({longest})")
    out = torch.full((len(seqs), width), pad_value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def as_predictions(pred: Tensor, target_dim: int) -> Tensor:
    """Accept either class indices (``target_dim`` dims) or logits (one extra trailing class dim)."""
    if pred.dim() == target_dim + 1:
        return pred.argmax(dim=-1)
    if pred.dim() != target_dim:
        raise ValueError(
            f"pred: expected class indices with {target_dim} dims or logits with {target_dim + 1}, "
            f"got shape {list(pred.shape)}"
        )
    return pred


def vocab_index(vocab: Sequence[str], name: str) -> dict[str, int]:
    """Map token -> index for a vocabulary given as a token list; duplicates would make decoding ambiguous."""
    index = {tok: i for i, tok in enumerate(vocab)}
    if len(index) != len(vocab):
        raise ValueError(f"{name}: vocabulary contains duplicate tokens")
    return index
