"""Tests of the code-execution task: generator, interpreter (with the conditional-assignment quirk), files, encoding."""

from __future__ import annotations

import random
import statistics

import pytest
import torch

from fastweights.data import code_execution as ce
from fastweights.data._io import DataFormatError

# Small splits keep the suite fast; official_sizes drops the last one of each (299 / 29 / 29).
SMALL = (300, 30, 30)


@pytest.fixture(scope="module", params=[3, 5])
def small(request):
    num_vars = request.param
    return num_vars, ce.generate_dataset(num_vars, sizes=SMALL, seed=7)


# ---------------------------------------------------------------------------------------------------------------------
# Generator and interpreter
# ---------------------------------------------------------------------------------------------------------------------


def test_execute_reproduces_every_generated_target(small):
    _, data = small
    assert [len(data[s]) for s in ("train", "valid", "test")] == [299, 29, 29]
    for examples in data.values():
        for src, tgt in examples:
            assert len(src) == len(tgt)
            assert ce.execute(src) == tgt


def test_program_structure(small):
    num_vars, data = small
    vocab = set(ce.input_vocab(num_vars))
    for src, tgt in data["train"]:
        assert set(src) <= vocab
        assert src[1] == "=" and src[3] == ";"  # first statement: an assignment
        assert src[-3] == "print" and tgt[-1] != ce.NOOP  # last statement: an executed print
        assert src.count(";") == 100  # code_length statements; a conditional and its body count as one
        for t in tgt:
            if t != ce.NOOP:
                assert ce.MIN_VALUE <= int(t) <= ce.MAX_VALUE


@pytest.mark.parametrize("code_length", [1, 2, 3, 10])
def test_short_programs(code_length):
    rng = random.Random(0)
    for _ in range(50):
        src, tgt = ce.generate_example(rng, 3, code_length)
        assert ce.execute(src) == tgt
        assert src.count(";") == code_length
        if code_length > 1:
            assert src[-3] == "print"


def test_generate_program_matches_example():
    a = ce.generate_program(random.Random(5), 5)
    b, _ = ce.generate_example(random.Random(5), 5)
    assert a == b


@pytest.mark.parametrize("bad", [0, 6, -1, True, 3.0, "3"])
def test_num_vars_validated(bad):
    with pytest.raises(ValueError, match="num_vars"):
        ce.generate_program(random.Random(0), bad)
    with pytest.raises(ValueError, match="num_vars"):
        ce.generate_dataset(bad, sizes=(1, 1, 1))


def test_code_length_validated():
    with pytest.raises(ValueError, match="code_length"):
        ce.generate_program(random.Random(0), 3, 0)


def run(program: str) -> list[str]:
    return ce.execute(program.split())


def printed(program: str) -> list[str]:
    """Targets of the print statements only, in order ('_' for a print that did not run)."""
    toks = program.split()
    out = ce.execute(toks)
    return [out[i + 2] for i, t in enumerate(toks) if t == "print"]


def test_conditional_assignment_quirk():
    # A true conditional assignment to a defined variable changes nothing (Python would print 9).
    assert printed("x = 5 ; if x > 2 : x = 9 ; print x ;") == ["5"]
    # ... but it defines a not-yet-defined variable.
    assert printed("x = 5 ; if x > 2 : y = 7 ; print y ;") == ["7"]
    # A false conditional assignment does not define the variable: reading it later is an error.
    assert printed("x = 5 ; if x < 2 : y = 7 ; print x ;") == ["5"]
    with pytest.raises(ValueError, match="token 14: variable 'y' is used before it is defined"):
        run("x = 5 ; if x < 2 : y = 7 ; print y ;")
    # An unconditional assignment always overwrites.
    assert printed("x = 5 ; x = 9 ; print x ;") == ["9"]


def test_handwritten_program():
    program = (
        "x = 5 ; if x > 2 : x = 9 ; print x ; "  # quirk: stays 5
        "if x > 2 : y = 7 ; print y ; "  # defines y = 7
        "if x < 2 : print x ; "  # false conditional print -> '_'
        "if x > 4 : print x ; "  # true conditional print -> 5
        "x ++ ; print x ; y -- ; y -- ; print y ; "  # 6, 5
        "if y > 0 : x -- ; print x ; "  # true: 5
        "if y < 0 : x ++ ; print x ; "  # false: stays 5
        "if x < 9 : x = 0 ; print x ;"  # quirk again: stays 5
    )
    assert printed(program) == ["5", "7", "_", "5", "6", "5", "5", "5", "5"]
    out = run(program)
    toks = program.split()
    # Only the ';' closing an executed print carries a value.
    for i, t in enumerate(out):
        if t != ce.NOOP:
            assert toks[i] == ";" and toks[i - 2] == "print"


@pytest.mark.parametrize(
    ("program", "position"),
    [
        ("x = 5", 3),  # missing ';'
        ("print x ;", 1),  # undefined variable
        ("x = 5 ; y ++ ;", 4),  # inc of an undefined variable
        ("x == 5 ;", 1),  # unknown operator
        ("x = q ;", 2),  # bad constant
        ("x = 5 ; if x < 3 : if x > 1 : print x ;", 9),  # nested conditional
        ("x = 5 ; if x = 3 : print x ;", 6),  # bad comparison
        ("x = 5 ; if x < 3 :", 9),  # conditional without body
        ("w = 5 ;", 0),  # unknown variable
        ("x = 5 ; ; print x ;", 4),  # stray ';'
    ],
)
def test_malformed_programs_name_the_position(program, position):
    with pytest.raises(ValueError, match=f"token {position}:"):
        run(program)


# ---------------------------------------------------------------------------------------------------------------------
# Dataset: sizes, reproducibility, statistics
# ---------------------------------------------------------------------------------------------------------------------


def test_official_sizes_drop_the_last_example_of_each_split():
    kept = ce.generate_dataset(3, sizes=(5, 3, 2), seed=1)
    full = ce.generate_dataset(3, sizes=(5, 3, 2), seed=1, official_sizes=False)
    assert [len(kept[s]) for s in kept] == [4, 2, 1]
    assert [len(full[s]) for s in full] == [5, 3, 2]
    # Same RNG stream either way: the official splits are the full ones minus their last example.
    for split in kept:
        assert kept[split] == full[split][:-1]


def test_reproducible_and_seed_dependent():
    a = ce.generate_dataset(3, sizes=(20, 5, 5), seed=3)
    b = ce.generate_dataset(3, sizes=(20, 5, 5), seed=3)
    c = ce.generate_dataset(3, sizes=(20, 5, 5), seed=4)
    assert a == b
    assert a["train"] != c["train"]
    # Splits come sequentially from one stream, so they differ from each other.
    assert a["valid"][0] != a["train"][0]


def test_seed42_anchor():
    # Pins the draw order: the seed-42 regeneration matches the official statistics (paper.md C.1, [CALC]) only when
    # every draw happens in the official order; these are the first programs of that regeneration.
    train = ce.generate_dataset(3, sizes=(6, 0, 0))["train"]
    assert " ".join(train[0][0][:15]) == "z = 1 ; z = 4 ; z ++ ; z = 8 ;"
    assert [len(s) for s, _ in train] == [396, 459, 494, 420, 459]
    train5 = ce.generate_dataset(5, sizes=(6, 0, 0))["train"]
    assert [len(s) for s, _ in train5] == [407, 461, 472, 456, 457]


def test_statistics_match_spec():
    train = ce.generate_dataset(3, sizes=(1500, 0, 0), seed=42)["train"]
    lengths = [len(s) for s, _ in train]
    targets = [t for _, tgt in train for t in tgt]
    noop = sum(t == ce.NOOP for t in targets) / len(targets)
    values = [int(t) for t in targets if t != ce.NOOP]
    assert abs(statistics.mean(lengths) - 456) < 10  # paper.md C.1: 456.1
    assert 360 <= min(lengths) and max(lengths) <= 560  # paper.md C.1: 377 .. 548
    assert abs(noop - 0.936) < 0.01  # paper.md C.1: 93.6 % of targets are '_'
    assert abs(len(values) / len(train) - 29) < 2  # paper.md C.1: ~29 printed values per program
    assert ce.MIN_VALUE <= min(values) and max(values) <= ce.MAX_VALUE


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------


def test_file_round_trip(small, tmp_path):
    num_vars, data = small
    paths = ce.write_dataset(data, tmp_path, num_vars)
    assert sorted(p.name for p in paths) == sorted(
        f"{s}_{num_vars}.{ext}" for s in ("train", "valid", "test") for ext in ("src", "tgt")
    )
    # Official byte layout: each token followed by a space.
    first = (tmp_path / f"train_{num_vars}.src").read_text().splitlines()[0]
    assert first == " ".join(data["train"][0][0]) + " "
    assert ce.read_dataset(tmp_path, num_vars) == data
    assert ce.read_split(tmp_path, "valid", num_vars, verify=False) == data["valid"]


@pytest.fixture()
def written(tmp_path):
    data = ce.generate_dataset(3, sizes=(6, 0, 0), seed=11)
    ce.write_dataset({"train": data["train"]}, tmp_path, 3)
    return tmp_path


def _edit_line(path, lineno, fn):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


def _change_first_print_target(line: str) -> str:
    toks = line.split()
    i = next(i for i, t in enumerate(toks) if t != "_")
    toks[i] = str(int(toks[i]) + 1)
    return " ".join(toks)


@pytest.mark.parametrize(
    ("suffix", "edit", "message"),
    [
        (".src", lambda l: l.replace("=", "==", 1), "unknown token '=='"),
        (".src", lambda l: "w " + l, "unknown token 'w'"),
        (".tgt", lambda l: l + " _", "target tokens for"),
        (".tgt", lambda l: l.replace("_", "-9", 1), "unknown target '-9'"),
        (".tgt", _change_first_print_target, "does not match execution"),
        (".src", lambda l: "", "empty program"),
        (".src", lambda l: l.replace("x", "print", 1), "malformed program"),
    ],
)
def test_malformed_line_names_file_and_line(written, suffix, edit, message):
    src = written / "train_3.src"
    _edit_line(src.with_suffix(suffix), 3, edit)
    with pytest.raises(DataFormatError, match=message) as info:
        ce.read_split(written, "train", 3)
    # Errors are ValueErrors that point at <file>:<line> of the edited file.
    assert isinstance(info.value, ValueError)
    assert info.value.path == str(src.with_suffix(suffix)) and info.value.line == 3
    assert str(info.value).startswith(f"{src.with_suffix(suffix)}:3:")


def test_verify_false_skips_execution(written):
    _edit_line(written / "train_3.tgt", 2, _change_first_print_target)
    with pytest.raises(DataFormatError, match=r"train_3\.tgt:2:"):
        ce.read_split(written, "train", 3)
    assert len(ce.read_split(written, "train", 3, verify=False)) == 5


def test_unknown_variable_for_num_vars(written):
    # A 5-variable token in a 3-variable file.
    _edit_line(written / "train_3.src", 4, lambda l: l.replace("x", "a"))
    with pytest.raises(DataFormatError, match=r"train_3\.src:4: unknown token 'a'"):
        ce.read_split(written, "train", 3)


def test_line_count_mismatch(written):
    tgt = written / "train_3.tgt"
    tgt.write_text("\n".join(tgt.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataFormatError, match=r"train_3\.tgt:5: missing line"):
        ce.read_split(written, "train", 3)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train_3\.src"):
        ce.read_split(tmp_path, "train", 3)
    with pytest.raises(ValueError, match="split"):
        ce.read_split(tmp_path, "dev", 3)


# ---------------------------------------------------------------------------------------------------------------------
# Vocabularies, encoding, metrics
# ---------------------------------------------------------------------------------------------------------------------


def test_fixed_vocabularies():
    assert len(ce.input_vocab(3)) == 22
    assert len(ce.input_vocab(5)) == 24
    assert ce.input_vocab(3)[:2] == ["++", "--"] and ce.input_vocab(3)[-3:] == ["x", "y", "z"]
    out = ce.output_vocab()
    assert len(out) == 26 and out[0] == "_" and out[1] == "-8" and out[-1] == "16"


def test_build_vocab(small):
    num_vars, data = small
    ins, outs = ce.build_vocab(data["train"])
    assert set(ins) == set(ce.input_vocab(num_vars))
    assert set(outs) <= set(ce.output_vocab())
    # First-appearance order, like the official loader: the first program starts with "<var> = <c> ;".
    assert ins[1:2] == ["="] and outs[0] == "_"
    sorted_ins, sorted_outs = ce.build_vocab(data["train"], sort=True)
    assert sorted_ins == ce.input_vocab(num_vars)
    assert sorted_outs == [t for t in ce.output_vocab() if t in set(outs)]


def test_official_vocab_sizes():
    # The sizes behind the paper's parameter counts (paper.md A.11: in 22, out 25 for 3 variables).
    ins, outs = ce.official_vocabs(3)
    assert len(ins) == 22 and len(outs) == 25
    assert "-8" not in outs and "-7" in outs and "16" in outs


def test_encode(small):
    num_vars, data = small
    examples = data["valid"][:7]
    ins, outs = ce.input_vocab(num_vars), ce.output_vocab()
    src, tgt, lengths = ce.encode(examples, ins, outs)
    longest = max(len(s) for s, _ in examples)
    assert src.shape == tgt.shape == (7, longest) and src.dtype == tgt.dtype == torch.long
    assert lengths.tolist() == [len(s) for s, _ in examples]
    for k, (s, t) in enumerate(examples):
        n = len(s)
        assert [ins[i] for i in src[k, :n].tolist()] == s
        assert [outs[i] for i in tgt[k, :n].tolist()] == t
        assert (src[k, n:] == 0).all() and (tgt[k, n:] == -1).all()
    src2, _, _ = ce.encode(examples, ins, outs, pad_to=longest + 3)
    assert src2.shape[1] == longest + 3
    with pytest.raises(ValueError, match="example 0"):
        ce.encode([(["w"], ["_"])], ins, outs)


def test_metrics():
    pad = -1
    tgt = torch.tensor([[0, 0, 5, pad], [0, 7, 0, 0], [3, 0, pad, pad]])
    pred = torch.tensor([[0, 0, 5, 9], [0, 7, 0, 1], [3, 2, 4, 4]])
    # Row 0: exact at all non-pad positions; row 1: wrong at a '_' position; row 2: wrong at a '_' position.
    assert ce.sequence_accuracy(pred, tgt) == pytest.approx(1 / 3)
    assert ce.print_accuracy(pred, tgt, noop_index=0) == 1.0
    assert ce.noop_accuracy(pred, tgt, noop_index=0) == pytest.approx(4 / 6)
    pred[1, 1] = 0
    assert ce.print_accuracy(pred, tgt, noop_index=0) == pytest.approx(2 / 3)
    # Logits are accepted too.
    logits = torch.nn.functional.one_hot(tgt.clamp(min=0), 10).float()
    assert ce.sequence_accuracy(logits, tgt) == 1.0
    with pytest.raises(ValueError, match="pred"):
        ce.sequence_accuracy(pred[:, :2], tgt)


def test_generate_dataset_reports_progress():
    seen: list[int] = []
    data = ce.generate_dataset(3, (6, 3, 3), seed=1, code_length=4, progress=seen.append)
    assert seen == list(range(1, 13))  # every generated program, the dropped last one of each split included
    assert [len(data[s]) for s in ("train", "valid", "test")] == [5, 2, 2]
