"""Tokens and vocabularies of language modelling: :func:`tokenize`, :class:`Vocabulary`, the encoding of a corpus's
splits and :class:`LMCorpus` (see :mod:`fastweights.data.lm` for the rules)."""

from __future__ import annotations

import json
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fastweights.data._io import SPLITS, DataFormatError, PathLike, check_split, decode_error

#: End-of-line token, appended to every line; id 0 in vocabularies built here.
EOS = "<eos>"

#: Out-of-vocabulary token.
UNK = "<unk>"
#: Token granularities.
LEVELS: tuple[str, str] = ("word", "char")
#: Word tokenizers: ``whitespace`` (WikiText, already tokenised) and ``punctuation`` (plain text).
TOKENIZERS: tuple[str, str] = ("whitespace", "punctuation")

#: Bump when the cached content or the tokenisation changes; old cache entries are then ignored.
CACHE_VERSION = 1

#: Name of the embedded corpus (accepted by :func:`load_corpus`).
EMBEDDED_NAME = "shakespeare"

_VOCAB_FORMAT = "fastweights-lm-vocab"

_CACHE_SUBDIR = ".fastweights-cache"

_EMBEDDED_FILES = {split: f"{split}.txt.gz" for split in SPLITS}

_WIKITEXT_NAMES = ({s: f"wiki.{s}.tokens" for s in SPLITS}, {s: f"{s}.txt" for s in SPLITS})

# Punctuation tokenizer: the special tokens whole; words (letters/digits, joined by inner apostrophes: "seem'd",
# "o'er"); runs of dashes or dots ("--", "..."); any other non-space character alone. A leading apostrophe is
# split off ("'tis" -> "'", "tis") because it cannot be told apart from an opening quote; hyphens split words
# ("all-licensed" -> "all", "-", "licensed"), as in WikiText (which writes them "@-@").
_PUNCT_TOKEN = re.compile(r"<eos>|<unk>|[^\W_]+(?:['’][^\W_]+)*|-{2,}|\.{2,}|\S")
#: The punctuation tokenizer's pattern (its tokens are the matches); also that of :mod:`fastweights.hf`'s tokenizer.
PUNCTUATION_PATTERN: str = _PUNCT_TOKEN.pattern



def user_cache_dir() -> Path:
    """The user cache directory: ``$FASTWEIGHTS_CACHE`` if set, else ``~/.cache/fastweights``."""
    return Path(os.environ.get("FASTWEIGHTS_CACHE", Path.home() / ".cache" / "fastweights"))



def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"level: expected one of {LEVELS}, got {level!r}")
    return level



def _check_tokenizer(tokenizer: str) -> str:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer: expected one of {TOKENIZERS}, got {tokenizer!r}")
    return tokenizer



def _splitter(level: str, tokenizer: str) -> Callable[[str], Iterable[str]]:
    if level == "char":
        return iter  # a str iterates over its characters
    return str.split if tokenizer == "whitespace" else _PUNCT_TOKEN.findall



def tokenize(line: str, level: str = "word", tokenizer: str = "whitespace") -> list[str]:
    """Tokens of one line (without its line end, and without the ``<eos>`` the corpus readers append).

    ``level="char"``: the characters of ``line``. ``level="word"``: ``line.split()`` for ``tokenizer="whitespace"``;
    for ``tokenizer="punctuation"`` words (letters and digits, with inner apostrophes kept: ``seem'd``) and every
    punctuation character on its own, except runs of dashes or dots (``--``, ``...``), which stay one token.
    """
    return list(_splitter(_check_level(level), _check_tokenizer(tokenizer))(line))



class Vocabulary:
    """Token <-> id map of a language-modelling corpus; contains :data:`EOS` and :data:`UNK`.

    ``tokens[i]`` is the token of id ``i``. Build one from text with :meth:`build` (the order rule is in the module
    docstring); :meth:`save` / :meth:`load` write and read JSON.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self._itos: list[str] = list(tokens)
        self._stoi: dict[str, int] = {tok: i for i, tok in enumerate(self._itos)}
        if len(self._stoi) != len(self._itos):
            raise ValueError("tokens: the vocabulary contains duplicate tokens")
        for special in (EOS, UNK):
            if special not in self._stoi:
                raise ValueError(f"tokens: the vocabulary must contain {special!r}")
        if not all(isinstance(t, str) for t in self._itos):
            raise ValueError("tokens: every token must be a str")

    @classmethod
    def build(cls, lines: Iterable[str], level: str = "word", tokenizer: str = "whitespace") -> Vocabulary:
        """Vocabulary of the training text ``lines`` (``<eos>`` first, then by frequency; see the module docstring)."""
        vocab, _ = _encode_training(lines, _splitter(_check_level(level), _check_tokenizer(tokenizer)))
        return vocab

    @property
    def tokens(self) -> list[str]:
        """All tokens, in id order (a copy)."""
        return list(self._itos)

    @property
    def eos_id(self) -> int:
        return self._stoi[EOS]

    @property
    def unk_id(self) -> int:
        return self._stoi[UNK]

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._itos == other._itos

    __hash__ = None  # type: ignore[assignment]  # mutable-looking container semantics: not hashable

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self._itos[:5])
        return f"Vocabulary({len(self)} tokens: {head}{', ...' if len(self) > 5 else ''})"

    def index(self, token: str) -> int:
        """Id of ``token``; the id of ``<unk>`` for a token not in the vocabulary."""
        return self._stoi.get(token, self.unk_id)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of ``tokens``; tokens not in the vocabulary map to the id of ``<unk>``."""
        return list(map(self._stoi.get, tokens, repeat(self.unk_id)))

    def decode(self, ids: Iterable[int] | Tensor) -> list[str]:
        """Tokens of ``ids`` (a sequence of ints or a 1-D integer tensor)."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1 or ids.is_floating_point() or ids.is_complex():
                raise ValueError(f"ids: expected a 1-D integer tensor, got {ids.dtype} of shape {list(ids.shape)}")
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < len(self._itos):
                raise ValueError(f"ids: id {i} is out of range for a vocabulary of {len(self._itos)} tokens")
            out.append(self._itos[i])
        return out

    def to_dict(self) -> dict:
        return {"format": _VOCAB_FORMAT, "version": 1, "tokens": list(self._itos)}

    @classmethod
    def from_dict(cls, data: dict, source: str = "vocabulary") -> Vocabulary:
        valid = isinstance(data, dict) and data.get("format") == _VOCAB_FORMAT
        if not valid or not isinstance(data.get("tokens"), list):
            raise ValueError(f"{source}: not a fastweights LM vocabulary (expected a JSON object with "
                             f"format={_VOCAB_FORMAT!r} and a 'tokens' list)")
        if data.get("version") != 1:
            raise ValueError(f"{source}: unsupported vocabulary version {data.get('version')!r} (expected 1)")
        return cls(data["tokens"])

    def save(self, path: PathLike) -> Path:
        """Write the vocabulary as JSON (atomically) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, exc.lineno, f"not valid JSON: {exc.msg}") from None
        return cls.from_dict(data, str(path))



class _FirstSeen(dict):
    """token -> provisional id, assigned in order of first appearance on lookup."""

    def __missing__(self, token: str) -> int:
        value = self[token] = len(self)
        return value



def _encode_training(lines: Iterable[str], split: Callable[[str], Iterable[str]]) -> tuple[Vocabulary, np.ndarray]:
    """One pass over the training lines: build the vocabulary and encode them (ids as int32, ``<eos>`` per line).

    Ids are first assigned in order of first appearance while encoding, then remapped to the final order
    (``<eos>`` first, frequency descending, ties by first appearance, ``<unk>`` last if unseen).
    """
    provisional = _FirstSeen({EOS: 0})
    lookup = provisional.__getitem__
    ids = array("i")
    for line in lines:
        ids.extend(map(lookup, split(line)))
        ids.append(0)
    prov = np.frombuffer(ids, dtype=np.int32) if len(ids) else np.zeros(0, dtype=np.int32)
    counts = np.bincount(prov, minlength=len(provisional))
    order = np.argsort(-counts[1:], kind="stable") + 1  # stable: equal counts keep first-appearance order
    first_seen = list(provisional)
    tokens = [EOS] + [first_seen[i] for i in order.tolist()]
    if UNK not in provisional:
        tokens.append(UNK)
    remap = np.zeros(len(provisional), dtype=np.int32)
    remap[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return Vocabulary(tokens), remap[prov]



def _encode_lines(lines: Iterable[str], split: Callable[[str], Iterable[str]], vocab: Vocabulary) -> np.ndarray:
    """Encode lines with a fixed vocabulary (unknown tokens -> ``<unk>``), ``<eos>`` appended to every line."""
    get, unk, eos = vocab._stoi.get, vocab.unk_id, vocab.eos_id
    ids = array("i")
    for line in lines:
        ids.extend(map(get, split(line), repeat(unk)))
        ids.append(eos)
    return np.frombuffer(ids, dtype=np.int32).copy() if len(ids) else np.zeros(0, dtype=np.int32)



@dataclass
class LMCorpus:
    """A tokenised corpus: vocabulary plus the three splits as 1-D ``torch.int32`` id tensors ``[N_split]``.

    ``level`` is ``"word"`` or ``"char"``; ``tokenizer`` the word tokenizer (``None`` at char level); ``name`` a
    short label (directory name or :data:`EMBEDDED_NAME`); ``source`` where the text came from.
    """

    vocab: Vocabulary
    train: Tensor
    valid: Tensor
    test: Tensor
    level: str
    name: str
    source: str
    tokenizer: str | None = None

    def split(self, name: str) -> Tensor:
        """The ids of split ``name`` (one of ``train``, ``valid``, ``test``)."""
        return getattr(self, check_split(name))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def summary(self) -> str:
        sizes = ", ".join(f"{s} {self.split(s).numel():,}" for s in SPLITS)
        return f"{self.name} ({self.level} level): vocabulary {len(self.vocab):,}, tokens: {sizes} [{self.source}]"



def _file_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 text file without their line end (universal newlines: ``\\r\\n`` and ``\\r`` end lines)."""
    try:
        with path.open("r", encoding="utf-8") as f:
            for line in f:
                yield line[:-1] if line.endswith("\n") else line
    except UnicodeDecodeError as exc:
        raise decode_error(path, exc) from None



def _text_lines(text: str) -> list[str]:
    """Lines of a text, each ending at ``\\n`` (a missing final line end is implied, as for files)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines



def _encode_splits(
    sources: dict[str, Callable[[], Iterable[str]]], level: str, tokenizer: str
) -> tuple[Vocabulary, dict[str, Tensor]]:
    split = _splitter(level, tokenizer)
    vocab, train = _encode_training(sources["train"](), split)
    out = {"train": torch.from_numpy(train)}
    for name in ("valid", "test"):
        out[name] = torch.from_numpy(_encode_lines(sources[name](), split, vocab))
    return vocab, out
