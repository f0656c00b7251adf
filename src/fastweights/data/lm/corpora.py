"""Reading corpora: WikiText, plain-text directories and the embedded corpus, each tokenised once and cached (see
:mod:`fastweights.data.lm`)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from fastweights.data._io import SPLITS, PathLike

from .vocab import (
    _CACHE_SUBDIR,
    _EMBEDDED_FILES,
    _WIKITEXT_NAMES,
    CACHE_VERSION,
    EMBEDDED_NAME,
    LMCorpus,
    Vocabulary,
    _check_level,
    _check_tokenizer,
    _encode_splits,
    _file_lines,
    _text_lines,
    user_cache_dir,
)


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
