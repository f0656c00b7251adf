"""Language-modelling data (paper.md C.3, E.1): corpora, vocabulary, on-disk cache, batching and a unigram baseline.

Corpora
-------
* :func:`read_wikitext` reads WikiText-103 (or WikiText-2) from a directory the user supplies, with the files as
  distributed (``wiki.{train,valid,test}.tokens``) or renamed as by the official ``getdata.sh``
  (``{train,valid,test}.txt``). Nothing is downloaded.
* :func:`read_text_dir` reads any directory of UTF-8 text files, at word or character level.
* :func:`load_embedded` loads the corpus shipped with the package: 18 Shakespeare plays in plain text
  (``data/shakespeare``; provenance and licence in its ``README.md``), split by play: 16 train, Macbeth valid,
  Twelfth Night test.
* :func:`load_corpus` picks one of the above from a ``--data`` style argument.

Tokens follow the Transformer-XL corpus reader that the paper's code uses (paper.md C.3):

* **word level**: each line is split on whitespace (``tokenizer="whitespace"``, case kept) and ``<eos>`` is appended
  to **every** line, empty lines included (they become a lone ``<eos>``). WikiText is already tokenised
  (punctuation split off, rare words replaced by ``<unk>``) and Transformer-XL skips no line, so this reproduces its
  token stream and its vocabulary exactly (WikiText-103: 267,735 types). Plain text is better read with
  ``tokenizer="punctuation"``, which also splits punctuation off words (see :func:`tokenize`).
* **char level**: every character of a line is a token (spaces included) and the line end becomes ``<eos>``.

The vocabulary is built from the training split only: ``<eos>`` has id 0 (as in Transformer-XL), then the training
tokens by decreasing frequency, ties broken by first appearance (``collections.Counter.most_common`` order). ``<unk>``
keeps its frequency rank when the training text contains it (WikiText does) and is appended last otherwise. Tokens of
valid/test that are not in the vocabulary map to ``<unk>``. A literal ``<eos>`` token in the text is read as the
end-of-line token.

Token ids are stored as 1-D ``torch.int32`` tensors: half the memory of int64 (WikiText-103's 103 M training tokens
take 413 MB instead of 826 MB). The batching functions return ``torch.int64`` (what embeddings and
``cross_entropy`` expect).

Cache
-----
Encoding WikiText-103 takes a while, so each tokenised corpus is cached with ``torch.save`` in
``<data_dir>/.fastweights-cache/``; when that directory cannot be written, in ``$FASTWEIGHTS_CACHE/lm`` (default
``~/.cache/fastweights/lm``). The cache key covers the file names, sizes and modification times, the level, the
tokenizer and :data:`CACHE_VERSION`, so editing a file invalidates the entry; an older entry of the same corpus is
deleted when its replacement is written. Writes are atomic (temporary file, then ``os.replace``). The embedded corpus
is cached in the user cache only (keyed on the content of its files), never inside the installed package.

Batching
--------
* :func:`random_segments`: ``B`` windows at uniformly random positions (truncated-context training).
* :class:`StreamBatcher` / :func:`stream_batches`: Transformer-XL's ordered iterator (``LMOrderedIterator``),
  extended to data-parallel ranks: the stream is cut into ``batch_size * world_size`` contiguous columns, rank ``r``
  owns columns ``[r * batch_size, (r + 1) * batch_size)``, and windows are yielded in order so that a recurrent state
  can be carried from one batch to the next. :func:`stream_layout` counts streams, batches and tokens.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import repeat
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fastweights.data._io import SPLITS, DataFormatError, PathLike, check_split, decode_error

__all__ = [
    "CACHE_VERSION",
    "EMBEDDED_NAME",
    "EOS",
    "LEVELS",
    "PUNCTUATION_PATTERN",
    "TOKENIZERS",
    "UNK",
    "LMCorpus",
    "StreamBatcher",
    "StreamLayout",
    "Vocabulary",
    "load_corpus",
    "load_embedded",
    "random_segments",
    "read_text_dir",
    "read_wikitext",
    "stream_batches",
    "stream_layout",
    "tokenize",
    "unigram_perplexity",
    "user_cache_dir",
    "wikitext_files",
]

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


# --------------------------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------------------------


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def _cache_load(path: Path, key: str) -> tuple[Vocabulary, dict[str, Tensor]] | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if obj.get("version") != CACHE_VERSION or obj.get("key") != key:
            return None
        return Vocabulary(obj["vocab"]), {s: obj[s] for s in SPLITS}
    except Exception as exc:  # a truncated or foreign file: rebuild rather than fail
        warnings.warn(f"ignoring unreadable LM cache file {path}: {exc}", RuntimeWarning, stacklevel=3)
        return None


def _cache_store(path: Path, key: str, vocab: Vocabulary, splits: dict[str, Tensor]) -> None:
    """Write atomically; delete the older entries of the same corpus (same file-name prefix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"version": CACHE_VERSION, "key": key, "vocab": vocab.tokens, **splits}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for old in path.parent.glob(prefix + "*.pt"):
        if old != path:
            old.unlink(missing_ok=True)


def _cached(
    candidates: list[Path], key: str, build: Callable[[], tuple[Vocabulary, dict[str, Tensor]]], use_cache: bool
) -> tuple[Vocabulary, dict[str, Tensor], Path | None]:
    """Return (vocab, splits, cache path used or written) from the first cache hit, else build and store."""
    if use_cache:
        for path in candidates:
            hit = _cache_load(path, key)
            if hit is not None:
                return hit[0], hit[1], path
    vocab, splits = build()
    if use_cache:
        for path in candidates:
            try:
                _cache_store(path, key, vocab, splits)
                return vocab, splits, path
            except OSError:
                continue  # not writable: try the next location
        warnings.warn(f"could not write the LM cache to any of {[str(p) for p in candidates]}", RuntimeWarning,
                      stacklevel=3)
    return vocab, splits, None


def _dir_cache_candidates(data_dir: Path, kind: str, level: str, tokenizer: str, key: str) -> list[Path]:
    """``<data_dir>/.fastweights-cache/...`` first, then the user cache (file name tagged with the directory)."""
    stem = f"{kind}-{level}-{tokenizer}"
    dir_tag = _digest(str(data_dir.resolve()))[:12]
    return [
        data_dir / _CACHE_SUBDIR / f"{stem}-{key[:16]}.pt",
        user_cache_dir() / "lm" / f"{stem}-{dir_tag}-{key[:16]}.pt",
    ]


def _read_dir(
    data_dir: Path,
    kind: str,
    files: list[Path],
    sources: dict[str, Callable[[], Iterable[str]]],
    level: str,
    tokenizer: str,
    cache: bool,
) -> LMCorpus:
    tag = tokenizer if level == "word" else "chars"  # the tokenizer plays no part at char level
    key = _digest({"version": CACHE_VERSION, "kind": kind, "level": level, "tokenizer": tag,
                   "files": [_file_stamp(p) for p in files]})
    candidates = _dir_cache_candidates(data_dir, kind, level, tag, key)
    vocab, splits, _ = _cached(candidates, key, lambda: _encode_splits(sources, level, tokenizer), cache)
    return LMCorpus(vocab, splits["train"], splits["valid"], splits["test"], level, data_dir.resolve().name,
                    str(data_dir.resolve()),
                    tokenizer if level == "word" else None)


def _check_dir(data_dir: PathLike, argument: str = "data_dir") -> Path:
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{argument}: no such directory: {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{argument}: expected a directory, got a file: {path}")
    return path


# --------------------------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------------------------


def wikitext_files(data_dir: PathLike) -> dict[str, Path] | None:
    """The split files of a WikiText directory: ``wiki.{split}.tokens`` (preferred) or ``{split}.txt``.

    Returns ``None`` when neither naming has any of its files; raises ``FileNotFoundError`` naming the missing
    paths when a naming is only partly present (e.g. ``wiki.valid.tokens`` without ``wiki.train.tokens``).
    """
    data_dir = Path(data_dir)
    for names in _WIKITEXT_NAMES:
        paths = {split: data_dir / name for split, name in names.items()}
        present = [p for p in paths.values() if p.is_file()]
        if len(present) == len(paths):
            return paths
        if present:
            missing = ", ".join(str(p) for p in paths.values() if not p.is_file())
            raise FileNotFoundError(f"incomplete corpus in {data_dir}: missing {missing}")
    return None


def read_wikitext(
    data_dir: PathLike, level: str = "word", tokenizer: str = "whitespace", *, cache: bool = True
) -> LMCorpus:
    """Read WikiText (word level, as in Transformer-XL) from ``data_dir``; see the module docstring for the rules.

    ``data_dir`` holds ``wiki.{train,valid,test}.tokens`` (as distributed) or ``{train,valid,test}.txt``. The
    result is cached (``cache=False`` neither reads nor writes the cache).
    """
    data_dir = _check_dir(data_dir)
    _check_level(level)
    _check_tokenizer(tokenizer)
    files = wikitext_files(data_dir)
    if files is None:
        expected = " or ".join(", ".join(names.values()) for names in _WIKITEXT_NAMES)
        raise FileNotFoundError(f"data_dir: {data_dir} contains no WikiText files (expected {expected})")
    sources = {split: (lambda p=path: _file_lines(p)) for split, path in files.items()}
    return _read_dir(data_dir, "wikitext", list(files.values()), sources, level, tokenizer, cache)


def _split_90_5_5(lines: list[str], where: Path) -> dict[str, list[str]]:
    n = len(lines)
    n_eval = max(1, n // 20)
    if n - 2 * n_eval < 1:
        raise ValueError(f"data_dir: the *.txt files of {where} have {n} lines in all; at least 3 are needed to "
                         f"split them 90/5/5 into train/valid/test")
    return {"train": lines[: n - 2 * n_eval], "valid": lines[n - 2 * n_eval : n - n_eval], "test": lines[n - n_eval :]}


def read_text_dir(
    data_dir: PathLike, level: str = "word", tokenizer: str = "whitespace", *, cache: bool = True
) -> LMCorpus:
    """Read a directory of UTF-8 text files at word or char level.

    With ``train.txt``, ``valid.txt`` and ``test.txt`` present those are the splits. Otherwise all ``*.txt`` files
    directly in ``data_dir`` (hidden ones excluded) are concatenated in sorted name order and split by lines:
    the first 90% train, the next 5% valid, the last 5% (``max(1, n // 20)`` lines each for valid and test).
    Every line, empty ones included, ends with ``<eos>``. For plain prose pass ``tokenizer="punctuation"``.
    """
    data_dir = _check_dir(data_dir)
    _check_level(level)
    _check_tokenizer(tokenizer)
    named = {split: data_dir / f"{split}.txt" for split in SPLITS}
    present = [p for p in named.values() if p.is_file()]
    if len(present) == len(named):
        sources = {split: (lambda p=path: _file_lines(p)) for split, path in named.items()}
        return _read_dir(data_dir, "text", present, sources, level, tokenizer, cache)
    if present:
        missing = ", ".join(str(p) for p in named.values() if not p.is_file())
        raise FileNotFoundError(f"incomplete corpus in {data_dir}: missing {missing} (or remove the other split "
                                f"files to have all *.txt files split 90/5/5)")
    files = sorted(p for p in data_dir.glob("*.txt") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"data_dir: {data_dir} contains no *.txt files (nor train.txt/valid.txt/test.txt)")
    parts: dict[str, list[str]] = {}

    def source(split: str) -> Callable[[], list[str]]:
        def lines() -> list[str]:
            if not parts:  # read once, on the first (train) request
                all_lines: list[str] = []
                for path in files:
                    all_lines.extend(_file_lines(path))
                parts.update(_split_90_5_5(all_lines, data_dir))
            return parts[split]

        return lines

    sources = {split: source(split) for split in SPLITS}
    return _read_dir(data_dir, "text-90-5-5", files, sources, level, tokenizer, cache)


def _embedded_dir():
    return resources.files("fastweights.data").joinpath(EMBEDDED_NAME)


def load_embedded(level: str = "word", *, cache: bool = True) -> LMCorpus:
    """The embedded Shakespeare corpus (word level with the punctuation tokenizer, or char level).

    The package data lives in ``fastweights/data/shakespeare/{train,valid,test}.txt.gz`` (see its
    ``README.md``). The tokenised corpus is cached in the user cache directory, keyed on the files' content.
    """
    _check_level(level)
    tokenizer = "punctuation"
    root = _embedded_dir()
    packed: dict[str, bytes] = {}
    for split, file_name in _EMBEDDED_FILES.items():
        entry = root.joinpath(file_name)
        try:
            packed[split] = entry.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(f"embedded corpus file missing from the installation: {entry} (the package "
                                    f"was built without its data files)") from None
    tag = tokenizer if level == "word" else "chars"
    key = _digest({"version": CACHE_VERSION, "kind": "embedded", "level": level, "tokenizer": tag,
                   "files": {s: hashlib.sha256(b).hexdigest() for s, b in packed.items()}})

    def build() -> tuple[Vocabulary, dict[str, Tensor]]:
        texts = {split: _text_lines(gzip.decompress(data).decode("utf-8")) for split, data in packed.items()}
        return _encode_splits({split: (lambda t=t: t) for split, t in texts.items()}, level, tokenizer)

    candidates = [user_cache_dir() / "lm" / f"{EMBEDDED_NAME}-{level}-{tag}-{key[:16]}.pt"]
    vocab, splits, _ = _cached(candidates, key, build, cache)
    return LMCorpus(vocab, splits["train"], splits["valid"], splits["test"], level, EMBEDDED_NAME,
                    f"package data fastweights/data/{EMBEDDED_NAME}", tokenizer if level == "word" else None)


def load_corpus(
    data: PathLike | None = None, level: str = "word", tokenizer: str | None = None, *, cache: bool = True
) -> LMCorpus:
    """Load a corpus from a ``--data`` style argument.

    ``None``, ``"embedded"`` or ``"shakespeare"``: :func:`load_embedded` (``tokenizer`` must then be ``None`` or
    ``"punctuation"``). A directory with WikiText files (``wiki.*.tokens`` or ``train/valid/test.txt``):
    :func:`read_wikitext`; any other directory: :func:`read_text_dir`. ``tokenizer=None`` means ``"whitespace"``
    for directories.
    """
    _check_level(level)
    if data is None or (isinstance(data, str) and data in ("embedded", EMBEDDED_NAME)):
        if tokenizer not in (None, "punctuation"):
            raise ValueError(f"tokenizer: the embedded corpus is tokenised with 'punctuation', got {tokenizer!r}")
        return load_embedded(level, cache=cache)
    data_dir = _check_dir(data, "data")
    tokenizer = _check_tokenizer(tokenizer or "whitespace")
    if wikitext_files(data_dir) is not None:
        return read_wikitext(data_dir, level, tokenizer, cache=cache)
    return read_text_dir(data_dir, level, tokenizer, cache=cache)


# --------------------------------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------------------------------


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def _check_ids(data: Tensor, name: str = "data") -> Tensor:
    if not isinstance(data, Tensor):
        raise TypeError(f"{name}: expected a 1-D integer tensor, got {type(data).__name__}")
    if data.dim() != 1 or data.is_floating_point() or data.is_complex() or data.dtype == torch.bool:
        raise ValueError(f"{name}: expected a 1-D integer tensor, got {data.dtype} of shape {list(data.shape)}")
    return data


def random_segments(
    data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Draw ``batch_size`` windows of ``seq_len + 1`` tokens at uniformly random start positions.

    Args:
        data: token ids ``[N]`` with ``N >= seq_len + 1``.
        generator: the random source (``None``: torch's global generator). The start positions are
            ``torch.randint(0, N - seq_len, (batch_size,))``.

    Returns:
        ``(inputs, targets)``, both ``[B, T]`` int64 on ``data``'s device; ``targets[:, t]`` is the token that
        follows ``inputs[:, t]`` in ``data`` (the window shifted by one).
    """
    _check_ids(data)
    _check_positive("batch_size", batch_size)
    _check_positive("seq_len", seq_len)
    n = data.numel()
    if n < seq_len + 1:
        raise ValueError(f"data: {n} tokens is too short for seq_len={seq_len} (need at least {seq_len + 1})")
    starts = torch.randint(0, n - seq_len, (batch_size,), generator=generator)
    index = starts.to(data.device)[:, None] + torch.arange(seq_len + 1, device=data.device)  # [B, T+1]
    windows = data[index].long()
    return windows[:, :-1], windows[:, 1:]


@dataclass(frozen=True)
class StreamLayout:
    """How :class:`StreamBatcher` cuts ``num_tokens`` tokens (numbers per rank unless said otherwise).

    ``num_streams = batch_size * world_size`` columns (all ranks) of ``stream_len = num_tokens // num_streams``
    tokens; ``dropped_tokens`` (< ``num_streams``) tail tokens are unused. Each column gives ``stream_len - 1``
    predictions, in ``num_batches`` windows of ``seq_len`` (the last one shorter unless dropped).
    """

    num_streams: int
    stream_len: int
    num_batches: int
    predicted_tokens: int  # per rank: batch_size * (number of target positions over all batches)
    dropped_tokens: int


def stream_layout(
    num_tokens: int, batch_size: int, seq_len: int, world_size: int = 1, drop_last: bool = False
) -> StreamLayout:
    """Count streams, batches and predicted tokens of :class:`StreamBatcher` without building it."""
    _check_positive("batch_size", batch_size)
    _check_positive("seq_len", seq_len)
    _check_positive("world_size", world_size)
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
        raise ValueError(f"num_tokens: expected a non-negative int, got {num_tokens!r}")
    streams = batch_size * world_size
    stream_len = num_tokens // streams
    if stream_len < 2:
        raise ValueError(f"data: {num_tokens} tokens is too short for batch_size * world_size = {streams} streams "
                         f"(need at least {2 * streams} tokens: two per stream)")
    positions = stream_len - 1  # target positions per column
    full, rest = divmod(positions, seq_len)
    num_batches = full + (1 if rest and not drop_last else 0)
    predicted = batch_size * (full * seq_len + (rest if rest and not drop_last else 0))
    return StreamLayout(streams, stream_len, num_batches, predicted, num_tokens - streams * stream_len)


class StreamBatcher:
    """Ordered LM batches over contiguous streams, for training or evaluation with a carried state.

    The ids ``data [N]`` are cut into ``S = batch_size * world_size`` contiguous streams: stream ``j`` is
    ``data[j * L:(j + 1) * L]`` with ``L = N // S`` (the last ``N - S * L`` tokens are dropped). Rank ``rank``
    owns streams ``[rank * batch_size, (rank + 1) * batch_size)``, so the ranks of a ``world_size`` run together
    see exactly the columns of a one-process run with batch size ``batch_size * world_size``. With
    ``world_size=1, rank=0`` this is Transformer-XL's ``LMOrderedIterator``.

    Iteration yields ``(inputs, targets)``, both ``[B, T]`` int64, window ``k`` covering column positions
    ``[k * seq_len, k * seq_len + T)`` with ``targets`` shifted by one; window ``k + 1`` continues each row where
    window ``k`` stopped, so a recurrent state can be carried across batches. The last window has
    ``T = (L - 1) % seq_len`` when that is non-zero; ``drop_last=True`` skips it (every batch then has
    ``T = seq_len``).
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        _check_ids(data)
        self.layout = stream_layout(data.numel(), batch_size, seq_len, world_size, drop_last)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank: expected an int in [0, {world_size}) for world_size={world_size}, got {rank!r}")
        self.batch_size, self.seq_len, self.rank, self.world_size = batch_size, seq_len, rank, world_size
        self.drop_last = drop_last
        used = self.layout.num_streams * self.layout.stream_len
        all_streams = data[:used].reshape(self.layout.num_streams, self.layout.stream_len)
        #: This rank's streams ``[B, L]`` (a view of ``data`` when it is contiguous).
        self.streams: Tensor = all_streams[rank * batch_size : (rank + 1) * batch_size]

    def __len__(self) -> int:
        return self.layout.num_batches

    def batch(self, index: int) -> tuple[Tensor, Tensor]:
        """Batch number ``index`` (0-based; e.g. to resume an epoch part-way)."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
            raise IndexError(f"index: expected an int in [0, {len(self)}), got {index!r}")
        start = index * self.seq_len
        length = min(self.seq_len, self.layout.stream_len - 1 - start)
        window = self.streams[:, start : start + length + 1].long()
        return window[:, :-1], window[:, 1:]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for index in range(len(self)):
            yield self.batch(index)


def stream_batches(
    data: Tensor, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1, drop_last: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """Iterate over :class:`StreamBatcher` ``(inputs [B, T], targets [B, T])`` windows, in order."""
    return iter(StreamBatcher(data, batch_size, seq_len, rank, world_size, drop_last))


# --------------------------------------------------------------------------------------------------------------------
# Baseline
# --------------------------------------------------------------------------------------------------------------------


def unigram_perplexity(train_ids: Tensor, eval_ids: Tensor, vocab_size: int, k: float = 1.0) -> float:
    """Perplexity of an add-``k`` smoothed unigram model fit on ``train_ids``, on ``eval_ids``.

    ``p(w) = (count_train(w) + k) / (N_train + k * V)`` (``k = 1``: Laplace), so tokens never seen in training
    keep a non-zero probability. Returns ``exp(-mean_t log p(eval_ids[t]))``: the context-free baseline a
    trained language model must beat on the same split.
    """
    _check_ids(train_ids, "train_ids")
    _check_ids(eval_ids, "eval_ids")
    _check_positive("vocab_size", vocab_size)
    if not (isinstance(k, (int, float)) and not isinstance(k, bool) and k > 0 and math.isfinite(k)):
        raise ValueError(f"k: expected a positive finite number, got {k!r}")
    if eval_ids.numel() == 0:
        raise ValueError("eval_ids: expected at least one token, got none")
    for name, ids in (("train_ids", train_ids), ("eval_ids", eval_ids)):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(f"{name}: ids must lie in [0, {vocab_size}), got range "
                             f"[{int(ids.min())}, {int(ids.max())}]")
    counts = torch.bincount(train_ids.long().cpu(), minlength=vocab_size).double()
    log_p = torch.log(counts + k) - math.log(train_ids.numel() + k * vocab_size)
    return math.exp(-float(log_p[eval_ids.long().cpu()].mean()))
