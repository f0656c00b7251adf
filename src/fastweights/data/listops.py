"""Sequential ListOps task of Irie et al. (2021), paper.md C.2.

An example is a prefix expression over the digits 0-9 with the operators ``[MIN``, ``[MAX`` and ``[FIRST``, each
closed by ``]`` (no parenthesis tokens), e.g. ``[MAX 3 [MIN 7 2 ] 5 ]`` -> 5. The model reads it left to right and
classifies the value (10 classes) at the last token.

Generator (paper.md C.2), reproduced draw for draw from one ``random.Random``, so ``seed=42`` regenerates the official
data: a node at depth ``d`` (root ``d = 1``) draws ``r = random()`` if ``d < 20`` (else ``r = 1``) and becomes a leaf
``choice(0..9)`` if ``r > 0.25`` and ``d > 1`` (so the root is always an operator, leaves have probability 0.75
below it); otherwise it draws ``randint(2, 5)`` arguments, generates them recursively, then draws the operator
uniformly. A tree's depth is the depth of its deepest leaf (an operator with only leaf children has depth 2).
Trees are kept by rejection when their depth equals the requested one.

Depth convention: the paper's "depth 10" data was generated with the official flag ``--only_depth 11`` and is stored
in ``*dep11.txt`` files. This module's ``depth`` argument is the paper's: ``depth=10`` selects trees of official
depth 11 (10 levels of operators) and reads/writes ``{split}_a5d20max401min299dep11.txt``.

File format: one example per line, ``<length> <target> <tokens...>``, ``length`` = number of tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from fastweights.data._io import (
    SPLITS,
    DataFormatError,
    PathLike,
    as_predictions,
    check_sizes,
    check_split,
    pad_sequences,
    read_lines,
    vocab_index,
    write_lines,
)

__all__ = [
    "END",
    "MAX_ARGS",
    "MAX_DEPTH",
    "NUM_CLASSES",
    "OPERATORS",
    "VALUE_P",
    "Example",
    "accuracy",
    "build_vocab",
    "encode",
    "evaluate",
    "generate_dataset",
    "generate_tree",
    "input_vocab",
    "read_dataset",
    "read_split",
    "split_path",
    "tree_depth",
    "write_dataset",
]

#: Operator tokens, in the order the generator's ``choice`` indexes them.
OPERATORS: tuple[str, ...] = ("[MIN", "[MAX", "[FIRST")
#: Closing token of every operator.
END = "]"
#: Number of output classes (the digits 0-9).
NUM_CLASSES = 10
#: Probability threshold: a non-root node below MAX_DEPTH is an operator iff ``random() <= VALUE_P``.
VALUE_P = 0.25
#: Maximum number of arguments of an operator (``randint(2, MAX_ARGS)``).
MAX_ARGS = 5
#: Nodes at this depth are always leaves.
MAX_DEPTH = 20

# A max_length that keeps fewer than _MIN_KEPT of the trees of the depth (measured over at least _MIN_TRIES of
# them) is refused: the rejection loop would run for hours instead of seconds.
_MIN_TRIES = 2000
_MIN_KEPT = 0.01

# Unused by the generator but part of the official file names (its length filters are commented out).
_FILE_TAG = f"a{MAX_ARGS}d{MAX_DEPTH}max401min299"
_VALUES = range(NUM_CLASSES)
_DIGITS = tuple(str(v) for v in _VALUES)
_DIGIT_VALUE = {s: v for v, s in enumerate(_DIGITS)}
_APPLY = {
    "[MIN": min,
    "[MAX": max,
    "[FIRST": lambda args: args[0],
}

#: One example: (tokens, label).
Example = tuple[list[str], int]


def _check_depth(depth: int) -> int:
    # The official depth (depth + 1) must be reachable: at least 2 (root plus leaves), at most MAX_DEPTH.
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH - 1:
        raise ValueError(
            f"depth: expected an int in 1..{MAX_DEPTH - 1} (paper depth; official only_depth = depth + 1), "
            f"got {depth!r}"
        )
    return depth


# --------------------------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------------------------


def _below(getrandbits: Callable[[int], int], n: int, bits: int) -> int:
    """``random.Random._randbelow(n)`` (``bits = n.bit_length()``), the draw behind ``choice`` and ``randint``:
    ``bits`` random bits, drawn again until they are below ``n``."""
    r = getrandbits(bits)
    while r >= n:
        r = getrandbits(bits)
    return r


_NUM_ARGS = MAX_ARGS - 1  # randint(2, MAX_ARGS) = 2 + randbelow(MAX_ARGS - 1)
_VALUE_BITS, _ARGS_BITS, _OP_BITS = NUM_CLASSES.bit_length(), _NUM_ARGS.bit_length(), len(OPERATORS).bit_length()


def _grow(rng: random.Random, depth: int, out: list[str]) -> tuple[int, int]:
    """Append the tokens of a random subtree rooted at ``depth`` to ``out``; return (value, deepest leaf depth).

    Tokens go straight into one shared list because most trees are rejected by the depth filter and allocation
    would dominate; the operator token is drawn after the arguments, so its slot is filled in afterwards. The
    official ``rng.choice(values)``, ``rng.randint(2, MAX_ARGS)`` and ``rng.choice(operators)`` are drawn as those
    methods draw them (:func:`_below` on ``getrandbits``), without their call overhead.
    """
    r = rng.random() if depth < MAX_DEPTH else 1.0
    if r > VALUE_P and depth > 1:
        value = _below(rng.getrandbits, NUM_CLASSES, _VALUE_BITS)
        out.append(_DIGITS[value])
        return value, depth
    slot = len(out)
    out.append("")
    args = []
    deepest = 1
    for _ in range(2 + _below(rng.getrandbits, _NUM_ARGS, _ARGS_BITS)):
        value, sub_depth = _grow(rng, depth + 1, out)
        args.append(value)
        if sub_depth > deepest:
            deepest = sub_depth
    op = OPERATORS[_below(rng.getrandbits, len(OPERATORS), _OP_BITS)]
    out[slot] = op
    out.append(END)
    return _APPLY[op](args), deepest


def generate_tree(rng: random.Random) -> tuple[list[str], int, int]:
    """Generate one random expression with the official draws.

    Returns:
        ``(tokens, value, official_depth)`` where ``official_depth`` is the depth of the deepest leaf (root = 1),
        i.e. paper depth + 1.
    """
    tokens: list[str] = []
    value, depth = _grow(rng, 1, tokens)
    return tokens, value, depth


def generate_dataset(
    depth: int, sizes: Sequence[int] = (10000, 1000, 1000), seed: int = 42,
    progress: Callable[[int], object] | None = None, max_length: int | None = None,
) -> dict[str, list[Example]]:
    """Generate train/valid/test sequentially from one ``random.Random(seed)`` by rejection on the exact depth.

    ``depth`` is the paper's depth (10 or 15); trees of official depth ``depth + 1`` are kept. With the defaults this
    regenerates the official ``dep11`` data (all ``size`` examples are kept, unlike code execution).
    ``max_length``: also reject trees of more tokens (the official generator has such a filter but leaves it
    off; None = off, the paper's data). The kept trees are still drawn by the official draws and have exactly the
    requested depth: the filter keeps the narrower trees of that depth, which are cheaper to train on.
    ``progress`` is called with the number of trees kept so far (all splits).

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}``, each a list of ``(tokens, label)``.
    """
    target = _check_depth(depth) + 1
    if max_length is not None:
        shortest = 3 * depth + 1  # the narrowest tree of the depth: a chain of operators with two arguments each
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < shortest:
            raise ValueError(f"max_length: expected an int >= {shortest} (the shortest tree of depth {depth} has "
                             f"{shortest} tokens) or None, got {max_length!r}")
    rng = random.Random(seed)
    data: dict[str, list[Example]] = {}
    deep_enough = kept = 0  # trees of the depth, and those of them short enough
    for split, size in zip(SPLITS, check_sizes(sizes)):
        examples: list[Example] = []
        while len(examples) < size:
            tokens, value, tree_d = generate_tree(rng)
            if tree_d != target:
                continue
            deep_enough += 1
            if max_length is not None and len(tokens) > max_length:
                if deep_enough >= _MIN_TRIES and kept < _MIN_KEPT * deep_enough:
                    raise ValueError(f"max_length: only {kept} of {deep_enough} trees of depth {depth} have at most "
                                     f"{max_length} tokens; generating the data would take too long (raise "
                                     f"max_length)")
                continue
            kept += 1
            examples.append((tokens, value))
            if progress is not None:
                progress(sum(map(len, data.values())) + len(examples))
        data[split] = examples
    return data


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


def evaluate(tokens: Sequence[str]) -> int:
    """Value of one expression, computed with an explicit stack (no recursion limit on deep inputs).

    Raises:
        ValueError: unknown token, ``]`` without an open operator, an operator without arguments, an unclosed
            operator, tokens after the complete expression, or an empty sequence; the message names the 0-based
            token position.
    """
    stack: list[tuple[str, int, list[int]]] = []  # (operator, its position, its argument values)
    result: int | None = None

    def deliver(value: int) -> None:
        nonlocal result
        if stack:
            stack[-1][2].append(value)
        else:
            result = value

    for pos, tok in enumerate(tokens):
        if result is not None:
            raise ValueError(f"token {pos}: {tok!r} after the end of the complete expression")
        if tok in _APPLY:
            stack.append((tok, pos, []))
        elif tok == END:
            if not stack:
                raise ValueError(f"token {pos}: {END!r} without an open operator")
            op, op_pos, args = stack.pop()
            if not args:
                raise ValueError(f"token {pos}: operator {op!r} at token {op_pos} has no arguments")
            deliver(_APPLY[op](args))
        elif tok in _DIGIT_VALUE:
            deliver(_DIGIT_VALUE[tok])
        else:
            raise ValueError(f"token {pos}: unknown token {tok!r}")
    if stack:
        op, op_pos, _ = stack[-1]
        raise ValueError(f"token {len(tokens)}: unexpected end, operator {op!r} at token {op_pos} is not closed")
    if result is None:
        raise ValueError("token 0: empty expression")
    return result


def tree_depth(tokens: Sequence[str]) -> int:
    """Official depth of a well-formed expression: 1 + the largest number of operators enclosing a leaf."""
    level = 0
    deepest = 0
    for tok in tokens:
        if tok in _APPLY:
            level += 1
        elif tok == END:
            level -= 1
        else:
            deepest = max(deepest, level + 1)
    return deepest


# --------------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------------


def split_path(data_dir: PathLike, split: str, depth: int) -> Path:
    """Path of the official file ``{split}_a5d20max401min299dep{depth + 1}.txt`` (``depth`` = paper depth)."""
    check_split(split)
    return Path(data_dir) / f"{split}_{_FILE_TAG}dep{_check_depth(depth) + 1}.txt"


def write_dataset(dataset: dict[str, list[Example]], out_dir: PathLike, depth: int) -> list[Path]:
    """Write the splits present in ``dataset`` as ``<length> <target> <tokens...>`` lines; return the paths.

    The lines are byte-identical to the official generator's (existing files are replaced, not appended to).
    """
    written = []
    for split, examples in dataset.items():
        path = split_path(out_dir, split, depth)
        write_lines(path, (f"{len(tokens)} {label} {' '.join(tokens)}" for tokens, label in examples))
        written.append(path)
    return written


def read_split(data_dir: PathLike, split: str, depth: int, verify: bool = True) -> list[Example]:
    """Read one split from the official file.

    Args:
        verify: also evaluate every expression and compare with the target field.

    Raises:
        FileNotFoundError: the file is missing (the message names the path).
        DataFormatError: (a ``ValueError``) a malformed line: length field not an int or not the token count,
            target not in 0..9, unknown token, or (``verify``) a malformed expression or a target that
            :func:`evaluate` does not reproduce. The message names the file and the 1-based line number.
    """
    path = split_path(data_dir, split, depth)
    known = frozenset(input_vocab())
    examples: list[Example] = []
    for k, line in enumerate(read_lines(path)):
        lineno = k + 1
        fields = line.split()
        if len(fields) < 3:
            raise DataFormatError(path, lineno, "expected '<length> <target> <tokens...>'")
        length_s, target_s, tokens = fields[0], fields[1], fields[2:]
        try:
            length = int(length_s)
        except ValueError:
            raise DataFormatError(path, lineno, f"length field {length_s!r} is not an integer") from None
        if length != len(tokens):
            # The loader reads the prediction at index length - 1, so a wrong length silently scores the wrong token.
            raise DataFormatError(path, lineno, f"length field says {length} tokens, the line has {len(tokens)}")
        if target_s not in _DIGIT_VALUE:
            raise DataFormatError(path, lineno, f"target {target_s!r} is not an integer in 0..9")
        for j, tok in enumerate(tokens):
            if tok not in known:
                raise DataFormatError(path, lineno, f"unknown token {tok!r} at position {j}")
        label = _DIGIT_VALUE[target_s]
        if verify:
            try:
                value = evaluate(tokens)
            except ValueError as err:
                raise DataFormatError(path, lineno, f"malformed expression: {err}") from err
            if value != label:
                raise DataFormatError(path, lineno, f"target {label} does not match the expression's value {value}")
        examples.append((tokens, label))
    return examples


def read_dataset(data_dir: PathLike, depth: int, verify: bool = True) -> dict[str, list[Example]]:
    """Read all three splits (see :func:`read_split`)."""
    return {split: read_split(data_dir, split, depth, verify=verify) for split in SPLITS}


# --------------------------------------------------------------------------------------------------------------------
# Vocabulary, encoding, metric
# --------------------------------------------------------------------------------------------------------------------


def input_vocab() -> list[str]:
    """Fixed input vocabulary of 14 tokens: ``0..9``, ``[MIN``, ``[MAX``, ``[FIRST``, ``]``.

    Like the official one (built from the train file's tokens) it has no padding token: :func:`encode` pads with
    index 0, which aliases ``0``. The label is read at position ``length - 1``, so causal models never see padding;
    other models should mask it with the returned lengths.
    """
    return [*_DIGITS, *OPERATORS, END]


def build_vocab(examples: Sequence[Example]) -> list[str]:
    """Input vocabulary in order of first appearance, as the official loader builds it from the train file."""
    seen: dict[str, None] = {}
    for tokens, _ in examples:
        seen.update(dict.fromkeys(tokens))
    return list(seen)


def encode(
    examples: Sequence[Example], vocab: Sequence[str] | None = None, pad_to: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Convert examples to tensors like the official loader.

    Args:
        vocab: token list; defaults to :func:`input_vocab`.

    Returns:
        ``(src, labels, lengths)``: ``src`` LongTensor ``[N, T]`` padded with 0 (``T`` = longest example unless
        ``pad_to``), ``labels`` LongTensor ``[N]``, ``lengths`` LongTensor ``[N]``. The logits to classify are at
        index ``lengths - 1`` (the official loader stores that index directly).
    """
    index = vocab_index(input_vocab() if vocab is None else vocab, "vocab")
    seqs, labels = [], []
    for k, (tokens, label) in enumerate(examples):
        try:
            seqs.append([index[t] for t in tokens])
        except KeyError as err:
            raise ValueError(f"example {k}: token {err.args[0]!r} is not in the vocabulary") from None
        if not 0 <= label < NUM_CLASSES:
            raise ValueError(f"example {k}: label {label} is not in 0..{NUM_CLASSES - 1}")
        labels.append(label)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return pad_sequences(seqs, 0, pad_to), torch.tensor(labels, dtype=torch.long), lengths


def accuracy(pred_labels: Tensor, labels: Tensor) -> float:
    """Fraction (0..1) of correct predictions; ``pred_labels`` is ``[N]`` class indices or ``[N, C]`` logits."""
    if labels.dim() != 1:
        raise ValueError(f"labels: expected [N], got shape {list(labels.shape)}")
    pred = as_predictions(pred_labels, 1)
    if pred.shape != labels.shape:
        raise ValueError(f"pred_labels: shape {list(pred.shape)} does not match labels {list(labels.shape)}")
    if labels.numel() == 0:
        return float("nan")
    return (pred == labels).double().mean().item()
