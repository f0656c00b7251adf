"""Code execution ("learning to execute") task of Irie et al. (2021), paper.md C.1.

A program is a sequence of ``code_length`` statements over ``num_vars`` integer variables (the first ``num_vars`` of
``x y z a b``), written as space-separated tokens::

    x = 3 ; y = 7 ; x ++ ; print x ; if y < 5 : print y ; y -- ; print y ;

The target sequence is aligned 1:1 with the tokens: every token has the no-op target ``_`` except the ``;`` that ends
an *executed* print, whose target is the printed integer (as a string). The model classifies every position.

Generator (paper.md C.1), reproduced draw for draw from one ``random.Random``, so ``seed=42`` regenerates the official
data set:

* statement 1 is an assignment, the last one a print; the ones in between are uniform over
  assignment ``v = c ;`` / increment-decrement ``v ++ ;``, ``v -- ;`` / print ``print v ;`` / conditional
  ``if v < c :`` or ``if v > c :`` followed by one non-conditional statement (uniform over the other three types);
* constants are ``randrange(10)`` (0..9); inc/dec, print and conditionals use an already defined variable;
* an inc/dec that would leave [-8, 16] is emitted as the opposite operation, so values stay in [-8, 16].

**Semantics quirk** (kept, since the official targets depend on it): an assignment inside a *true* conditional only
takes effect when the variable is not yet defined (it then defines it); on a defined variable it changes nothing.
A false conditional assignment does not define the variable. :func:`execute` implements exactly these semantics.

Files (official dump format): ``{train,valid,test}_{N}.src`` / ``.tgt`` with ``N = num_vars``, one program per line,
space-separated tokens. The official generator drops the last example of each split (its loop writes only when
``i != size - 1``): sizes 10000/1000/1000 give 9,999/999/999 programs. :func:`generate_dataset` reproduces this by
default (``official_sizes=True``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
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
    "MAX_VALUE",
    "MIN_VALUE",
    "NOOP",
    "VARIABLES",
    "Example",
    "build_vocab",
    "encode",
    "execute",
    "generate_dataset",
    "generate_example",
    "generate_program",
    "input_vocab",
    "noop_accuracy",
    "official_vocabs",
    "output_vocab",
    "print_accuracy",
    "read_dataset",
    "read_split",
    "sequence_accuracy",
    "split_paths",
    "write_dataset",
]

#: Variable names in the order the generator uses them; ``num_vars`` takes a prefix.
VARIABLES: tuple[str, ...] = ("x", "y", "z", "a", "b")
#: No-op target symbol.
NOOP = "_"
#: Inc/dec never leaves [MIN_VALUE, MAX_VALUE] (the generator flips the operation instead).
MIN_VALUE = -8
MAX_VALUE = 16

# Number of distinct assignment / comparison constants (randrange(10) -> 0..9). The official header comment says
# 1..10, but the code draws 0..9.
_NUM_CONSTANTS = 10
_CMP = ("<", ">")  # index 0 = less, 1 = greater, as drawn by the generator
_KEYWORD_TOKENS = ("++", "--", *(str(c) for c in range(_NUM_CONSTANTS)), ":", ";", "<", "=", ">", "if", "print")
_INT_LITERAL = re.compile(r"[0-9]+")

#: One example: (source tokens, target tokens), aligned 1:1.
Example = tuple[list[str], list[str]]


def _check_num_vars(num_vars: int) -> int:
    if isinstance(num_vars, bool) or not isinstance(num_vars, int) or not 1 <= num_vars <= len(VARIABLES):
        raise ValueError(f"num_vars: expected an int in 1..{len(VARIABLES)} (the paper uses 3 and 5), got {num_vars!r}")
    return num_vars


def _check_code_length(code_length: int) -> int:
    if isinstance(code_length, bool) or not isinstance(code_length, int) or code_length < 1:
        raise ValueError(f"code_length: expected a positive int (number of statements), got {code_length!r}")
    return code_length


# --------------------------------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------------------------------


class _ProgramWriter:
    """State of one program being generated: tokens, targets and the generator's view of the variables.

    ``defined`` keeps definition order because the generator picks "a defined variable" as
    ``defined[randrange(len(defined))]``; a different order would change which variable a seed produces.
    """

    def __init__(self, rng: random.Random, names: Sequence[str]) -> None:
        self.rng = rng
        self.names = names
        self.src: list[str] = []
        self.tgt: list[str] = []
        self.defined: list[int] = []
        self.values: dict[int, int] = {}

    def emit(self, tokens: Sequence[str], result: str = NOOP) -> None:
        # Every statement ends with ';' and only that token can carry a non-no-op target.
        self.src.extend(tokens)
        self.tgt.extend([NOOP] * (len(tokens) - 1))
        self.tgt.append(result)

    def pick_defined(self) -> int:
        return self.defined[self.rng.randrange(len(self.defined))]

    def assignment(self, conditional: bool, active: bool) -> None:
        rng = self.rng
        var = rng.randrange(len(self.names))
        value = rng.randrange(_NUM_CONSTANTS)
        if not conditional:
            if var not in self.values:
                self.defined.append(var)
            self.values[var] = value
        elif active and var not in self.values:
            # The quirk: a true conditional assignment only defines a still-undefined variable.
            self.defined.append(var)
            self.values[var] = value
        self.emit((self.names[var], "=", str(value), ";"))

    def incdec(self, active: bool) -> None:
        rng = self.rng
        var = self.pick_defined()
        increment = rng.randrange(2) == 0
        current = self.values[var]
        # The bound check uses the current value even when the statement will not run (false conditional).
        if increment and current + 1 > MAX_VALUE:
            increment = False
        elif not increment and current - 1 < MIN_VALUE:
            increment = True
        if active:
            self.values[var] = current + (1 if increment else -1)
        self.emit((self.names[var], "++" if increment else "--", ";"))

    def print_(self, active: bool) -> None:
        var = self.pick_defined()
        self.emit(("print", self.names[var], ";"), str(self.values[var]) if active else NOOP)

    def conditional(self) -> None:
        rng = self.rng
        # Draw order (comparison, variable, constant, then the body's type) matters for seed compatibility.
        cmp = rng.randrange(2)
        var = self.pick_defined()
        const = rng.randrange(_NUM_CONSTANTS)
        value = self.values[var]
        active = value > const if cmp == 1 else value < const
        self.src.extend(("if", self.names[var], _CMP[cmp], str(const), ":"))
        self.tgt.extend([NOOP] * 5)
        body = rng.randrange(3)
        if body == 0:
            self.assignment(conditional=True, active=active)
        elif body == 1:
            self.incdec(active)
        else:
            self.print_(active)


def generate_example(rng: random.Random, num_vars: int, code_length: int = 100) -> Example:
    """Generate one program and its target sequence with the official generator's draws and semantics.

    Args:
        rng: source of randomness; consumed exactly like the official generator consumes the ``random`` module.
        num_vars: number of variables (1..5; the paper uses 3 and 5).
        code_length: number of statements (a conditional and its body count as one). The first statement is an
            assignment and, if ``code_length > 1``, the last one a print.

    Returns:
        ``(src_tokens, tgt_tokens)`` of equal length.
    """
    names = VARIABLES[: _check_num_vars(num_vars)]
    _check_code_length(code_length)
    w = _ProgramWriter(rng, names)
    for count in range(code_length):
        # The first-statement rule wins over the last-statement rule (matters only for code_length == 1).
        if count == 0:
            kind = 0
        elif count == code_length - 1:
            kind = 2
        else:
            kind = rng.randrange(4)
        if kind == 0:
            w.assignment(conditional=False, active=True)
        elif kind == 1:
            w.incdec(active=True)
        elif kind == 2:
            w.print_(active=True)
        else:
            w.conditional()
    return w.src, w.tgt


def generate_program(rng: random.Random, num_vars: int, code_length: int = 100) -> list[str]:
    """Generate the tokens of one program (see :func:`generate_example`; targets come from :func:`execute`)."""
    return generate_example(rng, num_vars, code_length)[0]


def generate_dataset(
    num_vars: int,
    sizes: Sequence[int] = (10000, 1000, 1000),
    seed: int = 42,
    code_length: int = 100,
    official_sizes: bool = True,
    progress: Callable[[int], object] | None = None,
) -> dict[str, list[Example]]:
    """Generate the train/valid/test splits sequentially from one ``random.Random(seed)``.

    With the defaults this regenerates the official data set (seed 42, 100 statements). ``official_sizes=True``
    reproduces the official off-by-one: ``size`` programs are generated per split but the last one is dropped, so the
    default sizes give 9,999 / 999 / 999 programs. With ``official_sizes=False`` every generated program is kept.
    Both settings consume the RNG identically, so the kept programs are the same.

    Every program is re-executed with :func:`execute` and must reproduce the generator's targets.
    ``progress`` is called with the number of programs generated so far (all splits).

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}``, each a list of ``(src_tokens, tgt_tokens)``.
    """
    _check_num_vars(num_vars)
    _check_code_length(code_length)
    rng = random.Random(seed)
    data: dict[str, list[Example]] = {}
    done = 0
    for split, size in zip(SPLITS, check_sizes(sizes)):
        examples: list[Example] = []
        for i in range(size):
            src, tgt = generate_example(rng, num_vars, code_length)
            done += 1
            if progress is not None:
                progress(done)
            if official_sizes and i == size - 1:
                continue  # generated (to keep the RNG stream) but not written, as in the official generator
            if execute(src) != tgt:
                # Not an assert: it must not vanish under ``python -O``.
                raise RuntimeError(f"internal error: generator and interpreter disagree on {split} example {i}")
            examples.append((src, tgt))
        data[split] = examples
    return data


# --------------------------------------------------------------------------------------------------------------------
# Interpreter
# --------------------------------------------------------------------------------------------------------------------


def execute(tokens: Sequence[str]) -> list[str]:
    """Run a program with the generator's semantics and return its target sequence (aligned 1:1 with ``tokens``).

    Grammar: ``v = c ;`` | ``v ++ ;`` | ``v -- ;`` | ``print v ;`` | ``if v (<|>) c :`` + one non-conditional
    statement, with ``v`` in :data:`VARIABLES` and ``c`` a non-negative integer literal. Variables must be defined
    (by an executed assignment) before they are read, incremented or printed, also inside a false conditional,
    since the generator never produces anything else.

    Conditional-assignment quirk (paper.md C.1): inside a true conditional, ``v = c ;`` only takes effect if ``v`` is
    not yet defined; a false conditional assignment does not define ``v``.

    Raises:
        ValueError: a malformed program; the message names the token position (0-based).
    """
    toks = list(tokens)
    n = len(toks)
    out = [NOOP] * n
    values: dict[str, int] = {}

    def at(i: int, what: str) -> str:
        if i >= n:
            raise ValueError(f"token {i}: unexpected end of program, expected {what}")
        return toks[i]

    def expect(i: int, token: str) -> None:
        if at(i, repr(token)) != token:
            raise ValueError(f"token {i}: expected {token!r}, got {toks[i]!r}")

    def variable(i: int, must_be_defined: bool) -> str:
        name = at(i, "a variable")
        if name not in VARIABLES:
            raise ValueError(f"token {i}: expected a variable name {VARIABLES}, got {name!r}")
        if must_be_defined and name not in values:
            raise ValueError(f"token {i}: variable {name!r} is used before it is defined")
        return name

    def constant(i: int) -> int:
        tok = at(i, "an integer constant")
        if not _INT_LITERAL.fullmatch(tok):
            raise ValueError(f"token {i}: expected an integer constant, got {tok!r}")
        return int(tok)

    def statement(i: int, active: bool, conditional: bool) -> int:
        """Execute the non-conditional statement starting at ``i``; return the index after it."""
        tok = at(i, "a statement")
        if tok == "print":
            name = variable(i + 1, must_be_defined=True)
            expect(i + 2, ";")
            if active:
                out[i + 2] = str(values[name])
            return i + 3
        if tok == "if":
            raise ValueError(f"token {i}: a conditional cannot be the body of a conditional")
        if tok not in VARIABLES:
            raise ValueError(f"token {i}: expected the start of a statement ('if', 'print' or a variable), got {tok!r}")
        op = at(i + 1, "'=', '++' or '--'")
        if op == "=":
            value = constant(i + 2)
            expect(i + 3, ";")
            if active and not (conditional and tok in values):
                values[tok] = value
            return i + 4
        if op in ("++", "--"):
            variable(i, must_be_defined=True)
            expect(i + 2, ";")
            if active:
                values[tok] += 1 if op == "++" else -1
            return i + 3
        raise ValueError(f"token {i + 1}: expected '=', '++' or '--' after {tok!r}, got {op!r}")

    i = 0
    while i < n:
        if toks[i] == "if":
            name = variable(i + 1, must_be_defined=True)
            cmp = at(i + 2, "'<' or '>'")
            if cmp not in _CMP:
                raise ValueError(f"token {i + 2}: expected '<' or '>', got {cmp!r}")
            const = constant(i + 3)
            expect(i + 4, ":")
            holds = values[name] < const if cmp == "<" else values[name] > const
            if i + 5 >= n:
                raise ValueError(f"token {i + 5}: unexpected end of program, expected the body of the conditional")
            i = statement(i + 5, active=holds, conditional=True)
        else:
            i = statement(i, active=True, conditional=False)
    return out


# --------------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------------


def split_paths(data_dir: PathLike, split: str, num_vars: int) -> tuple[Path, Path]:
    """Paths of the official ``{split}_{num_vars}.src`` / ``.tgt`` files."""
    check_split(split)
    _check_num_vars(num_vars)
    base = Path(data_dir) / f"{split}_{num_vars}"
    return base.with_suffix(".src"), base.with_suffix(".tgt")


def write_dataset(dataset: dict[str, list[Example]], out_dir: PathLike, num_vars: int) -> list[Path]:
    """Write the splits present in ``dataset`` in the official format and return the written paths.

    Each token is followed by one space (the official files end every line with ``" "`` before the newline), so
    files written from the seed-42 data are byte-identical to a fresh run of the official generator. Existing files
    are replaced (the official generator appends).
    """
    _check_num_vars(num_vars)
    written = []
    for split, examples in dataset.items():
        src_path, tgt_path = split_paths(out_dir, split, num_vars)
        for k, (src, tgt) in enumerate(examples):
            if len(src) != len(tgt):
                raise ValueError(f"dataset[{split!r}][{k}]: source has {len(src)} tokens, target {len(tgt)}")
        write_lines(src_path, ("".join(t + " " for t in src) for src, _ in examples))
        write_lines(tgt_path, ("".join(t + " " for t in tgt) for _, tgt in examples))
        written += [src_path, tgt_path]
    return written


def _target_tokens() -> frozenset[str]:
    return frozenset(output_vocab())


def read_split(data_dir: PathLike, split: str, num_vars: int, verify: bool = True) -> list[Example]:
    """Read one split from the official ``{split}_{N}.src`` / ``.tgt`` files.

    Args:
        verify: also re-execute every program and compare with its target line.

    Raises:
        FileNotFoundError: a file is missing (the message names the path).
        DataFormatError: (a ``ValueError``) a malformed line: unknown token, source/target length mismatch, empty
            line, differing line counts, or (``verify``) a target that :func:`execute` does not reproduce. The
            message names the file and the 1-based line number.
    """
    src_path, tgt_path = split_paths(data_dir, split, num_vars)
    src_lines = read_lines(src_path)
    tgt_lines = read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        # Name the shorter file at the first line it lacks.
        counts = sorted([(len(src_lines), src_path), (len(tgt_lines), tgt_path)], key=lambda c: c[0])
        (n_short, short), (n_long, long_) = counts
        raise DataFormatError(
            short, n_short + 1, f"missing line: {short.name} has {n_short} lines, {long_.name} {n_long}"
        )
    in_tokens = frozenset(input_vocab(num_vars))
    out_tokens = _target_tokens()
    examples: list[Example] = []
    for k, (src_line, tgt_line) in enumerate(zip(src_lines, tgt_lines)):
        lineno = k + 1
        src, tgt = src_line.split(), tgt_line.split()
        if not src:
            raise DataFormatError(src_path, lineno, "empty program")
        for j, tok in enumerate(src):
            if tok not in in_tokens:
                raise DataFormatError(src_path, lineno, f"unknown token {tok!r} at position {j} for {num_vars} vars")
        for j, tok in enumerate(tgt):
            if tok not in out_tokens:
                raise DataFormatError(tgt_path, lineno, f"unknown target {tok!r} at position {j}")
        if len(src) != len(tgt):
            raise DataFormatError(tgt_path, lineno, f"{len(tgt)} target tokens for {len(src)} source tokens")
        if verify:
            try:
                expected = execute(src)
            except ValueError as err:
                raise DataFormatError(src_path, lineno, f"malformed program: {err}") from err
            if expected != tgt:
                j = next(j for j, (a, b) in enumerate(zip(expected, tgt)) if a != b)
                raise DataFormatError(
                    tgt_path, lineno, f"target {tgt[j]!r} at position {j} does not match execution ({expected[j]!r})"
                )
        examples.append((src, tgt))
    return examples


def read_dataset(data_dir: PathLike, num_vars: int, verify: bool = True) -> dict[str, list[Example]]:
    """Read all three splits (see :func:`read_split`)."""
    return {split: read_split(data_dir, split, num_vars, verify=verify) for split in SPLITS}


# --------------------------------------------------------------------------------------------------------------------
# Vocabularies, encoding, metrics
# --------------------------------------------------------------------------------------------------------------------


def input_vocab(num_vars: int) -> list[str]:
    """Fixed input vocabulary: ``++ -- 0..9 : ; < = > if print`` + the variable names (22 tokens for 3 vars, 24 for 5).

    There is no padding token, as in the official loader (whose vocabulary is exactly the set of tokens of the
    train file): :func:`encode` pads with index 0, which aliases ``++``. Padded positions carry target -1 and are
    never scored; models that are not causal should mask them using the returned lengths.
    """
    return [*_KEYWORD_TOKENS, *VARIABLES[: _check_num_vars(num_vars)]]


def output_vocab() -> list[str]:
    """Fixed output vocabulary: ``_`` (index 0) then ``-8 .. 16`` (26 classes).

    This covers every value the generator can print. The official loader instead builds the output vocabulary from
    the train file: 25 classes for the seed-42 3-variable data (-8 is never printed there), and that count is what
    the paper's parameter counts (e.g. Delta RNN 3,724,057) use. Use :func:`build_vocab` / :func:`official_vocabs`
    to reproduce it.
    """
    return [NOOP, *(str(v) for v in range(MIN_VALUE, MAX_VALUE + 1))]


def build_vocab(examples: Sequence[Example], sort: bool = False) -> tuple[list[str], list[str]]:
    """Build (input, output) vocabularies from data, like the official loader.

    The official ``Vocabulary`` gives indices in order of first appearance in the train file (source and target
    files separately), so with ``sort=False`` (default) the index layout matches official checkpoints.
    ``sort=True`` orders each vocabulary canonically instead (input tokens as :func:`input_vocab`, unknown ones
    after; outputs ``_`` first then numerically).
    """
    src_vocab: dict[str, None] = {}
    tgt_vocab: dict[str, None] = {}
    for src, tgt in examples:
        src_vocab.update(dict.fromkeys(src))
        tgt_vocab.update(dict.fromkeys(tgt))
    ins, outs = list(src_vocab), list(tgt_vocab)
    if sort:
        canon = {t: i for i, t in enumerate((*_KEYWORD_TOKENS, *VARIABLES))}
        ins.sort(key=lambda t: (canon.get(t, len(canon)), t))
        outs.sort(key=_output_sort_key)
    return ins, outs


def _output_sort_key(token: str) -> tuple[int, int, str]:
    # `_` first, then integers numerically, then anything else alphabetically.
    if token == NOOP:
        return (0, 0, token)
    if re.fullmatch(r"-?[0-9]+", token):
        return (1, int(token), token)
    return (2, 0, token)


@lru_cache(maxsize=8)
def _official_vocabs(num_vars: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    train = generate_dataset(num_vars, sizes=(10000, 0, 0), seed=42)["train"]
    ins, outs = build_vocab(train)
    return tuple(ins), tuple(outs)


def official_vocabs(num_vars: int) -> tuple[list[str], list[str]]:
    """The vocabularies the official loader builds from the seed-42 train split (first-appearance order).

    Regenerates the train split (a few seconds, cached per process). For 3 variables: 22 input tokens and
    25 output classes (``_`` and -7..16), the sizes behind the paper's parameter counts.
    """
    ins, outs = _official_vocabs(_check_num_vars(num_vars))
    return list(ins), list(outs)


def encode(
    examples: Sequence[Example],
    in_vocab: Sequence[str],
    out_vocab: Sequence[str],
    pad_to: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Convert examples to tensors like the official loader.

    Returns:
        ``(src, tgt, lengths)``: ``src`` LongTensor ``[N, T]`` padded with 0, ``tgt`` LongTensor ``[N, T]`` padded
        with -1 (the loss's ignore index), ``lengths`` LongTensor ``[N]``. ``T`` is the longest example unless
        ``pad_to`` is given.

    Raises:
        ValueError: a token missing from a vocabulary, or mismatched source/target lengths (names the example).
    """
    in_index = vocab_index(in_vocab, "in_vocab")
    out_index = vocab_index(out_vocab, "out_vocab")
    srcs, tgts = [], []
    for k, (src, tgt) in enumerate(examples):
        if len(src) != len(tgt):
            raise ValueError(f"example {k}: source has {len(src)} tokens, target {len(tgt)}")
        try:
            srcs.append([in_index[t] for t in src])
        except KeyError as err:
            raise ValueError(f"example {k}: source token {err.args[0]!r} is not in in_vocab") from None
        try:
            tgts.append([out_index[t] for t in tgt])
        except KeyError as err:
            raise ValueError(f"example {k}: target token {err.args[0]!r} is not in out_vocab") from None
    lengths = torch.tensor([len(s) for s in srcs], dtype=torch.long)
    return pad_sequences(srcs, 0, pad_to), pad_sequences(tgts, -1, pad_to), lengths


def _check_pair(pred: Tensor, tgt: Tensor) -> Tensor:
    if tgt.dim() != 2:
        raise ValueError(f"tgt: expected [N, T], got shape {list(tgt.shape)}")
    pred = as_predictions(pred, 2)
    if pred.shape != tgt.shape:
        raise ValueError(f"pred: shape {list(pred.shape)} does not match tgt {list(tgt.shape)}")
    return pred


def sequence_accuracy(pred: Tensor, tgt: Tensor, pad_value: int = -1) -> float:
    """Fraction (0..1) of sequences predicted exactly at every non-pad position: the paper's metric.

    ``pred`` is class indices ``[N, T]`` or logits ``[N, T, C]``; ``tgt`` is ``[N, T]`` with ``pad_value`` padding.
    Every position counts, including the no-op ``_`` ones. Returns ``nan`` for ``N == 0``.
    """
    pred = _check_pair(pred, tgt)
    if tgt.shape[0] == 0:
        return float("nan")
    ok = (pred == tgt) | (tgt == pad_value)
    return ok.all(dim=1).double().mean().item()


def _masked_accuracy(pred: Tensor, tgt: Tensor, mask: Tensor) -> float:
    total = int(mask.sum().item())
    if total == 0:
        return float("nan")
    return ((pred == tgt) & mask).sum().item() / total


def print_accuracy(pred: Tensor, tgt: Tensor, noop_index: int, pad_value: int = -1) -> float:
    """Token accuracy (0..1) on print positions (target neither ``_`` nor padding); ``nan`` if there are none."""
    pred = _check_pair(pred, tgt)
    return _masked_accuracy(pred, tgt, (tgt != pad_value) & (tgt != noop_index))


def noop_accuracy(pred: Tensor, tgt: Tensor, noop_index: int, pad_value: int = -1) -> float:
    """Token accuracy (0..1) on no-op positions (target ``_``); ``nan`` if there are none."""
    pred = _check_pair(pred, tgt)
    return _masked_accuracy(pred, tgt, tgt == noop_index)
