"""Tests of the language-modelling data: tokenisation, vocabulary, corpus readers, cache, embedded corpus, batching."""

from __future__ import annotations

import collections
import gzip
import math
import os
import re
import warnings
from pathlib import Path

import pytest
import torch

from fastweights.data import lm
from fastweights.data._io import DataFormatError
from fastweights.data.lm import corpora

torch.set_num_threads(1)

WIKI_TRAIN = " \n = Title = \n \n the cat sat on the mat . \n the dog <unk> . \n"
WIKI_VALID = " \n the bird sat . \n"
WIKI_TEST = "the cat flew \n"


@pytest.fixture(autouse=True)
def _user_cache(tmp_path, monkeypatch):
    """Keep every cache write of these tests inside tmp_path."""
    monkeypatch.setenv("FASTWEIGHTS_CACHE", str(tmp_path / "user-cache"))


def _write(directory, files: dict[str, str]):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def _wikitext_dir(tmp_path, naming="tokens"):
    if naming == "tokens":
        names = {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"}
    else:
        names = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
    texts = {"train": WIKI_TRAIN, "valid": WIKI_VALID, "test": WIKI_TEST}
    return _write(tmp_path / f"wt-{naming}", {names[s]: texts[s] for s in texts})


def _reference_vocab(lines):
    """Transformer-XL's rule, written independently: <eos> first, then Counter.most_common over the training words."""
    counter = collections.Counter()
    for line in lines:
        counter.update(line.split())
    tokens = [lm.EOS] + [tok for tok, _ in counter.most_common()]
    return tokens if lm.UNK in tokens else [*tokens, lm.UNK]


def _decoded(corpus, split):
    return corpus.vocab.decode(corpus.split(split))


# ---------------------------------------------------------------------------------------------------------------------
# Tokenisation and vocabulary
# ---------------------------------------------------------------------------------------------------------------------


def test_tokenize_levels_and_tokenizers():
    assert lm.tokenize("  a  b c ") == ["a", "b", "c"]
    assert lm.tokenize("ab c", level="char") == ["a", "b", " ", "c"]
    line = "Show'd like a rebel's whore: but all's too weak-- 'tis <unk> half-way..."
    assert lm.tokenize(line, tokenizer="punctuation") == [
        "Show'd", "like", "a", "rebel's", "whore", ":", "but", "all's", "too", "weak", "--", "'", "tis", "<unk>",
        "half", "-", "way", "...",
    ]
    with pytest.raises(ValueError, match="level"):
        lm.tokenize("a", level="byte")
    with pytest.raises(ValueError, match="tokenizer"):
        lm.tokenize("a", tokenizer="bpe")


def test_vocabulary_order_is_frequency_then_first_appearance():
    lines = ["b a c a", "d c a", "", "e b"]
    vocab = lm.Vocabulary.build(lines)
    # a:3, then b, c (2 each: b first seen before c), then d, e (1 each); <eos> first, <unk> appended (unseen).
    assert vocab.tokens == ["<eos>", "a", "b", "c", "d", "e", "<unk>"]
    assert vocab.tokens == _reference_vocab(lines)
    assert (vocab.eos_id, vocab.unk_id, len(vocab)) == (0, 6, 7)
    assert lm.Vocabulary.build(lines) == vocab  # deterministic
    # <unk> present in the training text keeps its frequency rank.
    with_unk = lm.Vocabulary.build(["x <unk> <unk> y", "x <unk>"])
    assert with_unk.tokens == ["<eos>", "<unk>", "x", "y"]


def test_vocabulary_encode_decode_and_errors():
    vocab = lm.Vocabulary.build(["the cat the"])
    ids = vocab.encode(["the", "dog", "cat", "<eos>"])
    assert ids == [vocab.index("the"), vocab.unk_id, vocab.index("cat"), vocab.eos_id]
    assert vocab.decode(ids) == ["the", "<unk>", "cat", "<eos>"]
    assert vocab.decode(torch.tensor(ids, dtype=torch.int32)) == ["the", "<unk>", "cat", "<eos>"]
    assert "cat" in vocab and "dog" not in vocab
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([len(vocab)])
    with pytest.raises(ValueError, match="duplicate"):
        lm.Vocabulary(["<eos>", "<unk>", "a", "a"])
    with pytest.raises(ValueError, match="<unk>"):
        lm.Vocabulary(["<eos>", "a"])


def test_vocabulary_save_load_round_trip(tmp_path):
    vocab = lm.Vocabulary.build(["é ü , 「引」", "<unk> x"])
    path = vocab.save(tmp_path / "sub" / "vocab.json")
    loaded = lm.Vocabulary.load(path)
    assert loaded == vocab and loaded.tokens == vocab.tokens
    assert not list(path.parent.glob("*.tmp"))
    (tmp_path / "bad.json").write_text('{"tokens": [', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.json"):
        lm.Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"tokens": ["a"]}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a fastweights LM vocabulary"):
        lm.Vocabulary.load(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        lm.Vocabulary.load(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------------------------------------------
# WikiText reader
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("naming", ["tokens", "txt"])
def test_read_wikitext_both_namings(tmp_path, naming):
    corpus = lm.read_wikitext(_wikitext_dir(tmp_path, naming))
    assert corpus.level == "word" and corpus.name == f"wt-{naming}"
    assert corpus.vocab.tokens == _reference_vocab(WIKI_TRAIN.splitlines())
    # Every line gets <eos>, empty (whitespace-only) lines included; case and tokens kept as they are.
    assert _decoded(corpus, "train") == [
        "<eos>", "=", "Title", "=", "<eos>", "<eos>", "the", "cat", "sat", "on", "the", "mat", ".", "<eos>",
        "the", "dog", "<unk>", ".", "<eos>",
    ]
    # Words absent from the training split become <unk> in valid and test.
    assert _decoded(corpus, "valid") == ["<eos>", "the", "<unk>", "sat", ".", "<eos>"]
    assert _decoded(corpus, "test") == ["the", "cat", "<unk>", "<eos>"]
    for split in ("train", "valid", "test"):
        tensor = corpus.split(split)
        assert tensor.dtype == torch.int32 and tensor.dim() == 1
    assert "vocabulary" in corpus.summary()


def test_read_wikitext_matches_when_file_lacks_final_newline_and_uses_crlf(tmp_path):
    directory = tmp_path / "crlf"
    directory.mkdir()
    (directory / "train.txt").write_bytes(b"a b\r\n\r\nc")
    (directory / "valid.txt").write_bytes(b"a\n")
    (directory / "test.txt").write_bytes(b"b\n")
    corpus = lm.read_wikitext(directory)
    assert _decoded(corpus, "train") == ["a", "b", "<eos>", "<eos>", "c", "<eos>"]


def test_missing_and_incomplete_directories_name_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        lm.read_wikitext(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        lm.load_corpus(str(missing))
    partial = _write(tmp_path / "partial", {"wiki.train.tokens": "a\n", "wiki.test.tokens": "a\n"})
    with pytest.raises(FileNotFoundError, match=re.escape(str(partial / "wiki.valid.tokens"))):
        lm.read_wikitext(partial)
    with pytest.raises(FileNotFoundError, match=r"wiki\.valid\.tokens"):
        lm.load_corpus(str(partial))
    empty = _write(tmp_path / "empty", {"notes.md": "x\n"})
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
        lm.read_wikitext(empty)
    with pytest.raises(FileNotFoundError, match=r"no \*\.txt files"):
        lm.read_text_dir(empty)
    a_file = empty / "notes.md"
    with pytest.raises(NotADirectoryError, match=r"notes\.md"):
        lm.load_corpus(str(a_file))


def test_invalid_utf8_reports_path_and_line(tmp_path):
    directory = _write(tmp_path / "bad", {"valid.txt": "a\n", "test.txt": "a\n"})
    (directory / "train.txt").write_bytes(b"fine line\nsecond\nbad \xff byte\n")
    with pytest.raises(DataFormatError, match=r"train\.txt:3: not valid UTF-8"):
        lm.read_wikitext(directory, cache=False)


# ---------------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------------


def _fail(*args, **kwargs):
    raise AssertionError("the corpus was re-read although the cache is valid")


def test_cache_hit_and_invalidation(tmp_path, monkeypatch):
    directory = _wikitext_dir(tmp_path)
    first = lm.read_wikitext(directory)
    cached = list((directory / ".fastweights-cache").glob("*.pt"))
    assert len(cached) == 1
    assert not list((directory / ".fastweights-cache").glob("*.tmp"))

    with monkeypatch.context() as m:
        m.setattr(corpora, "_encode_splits", _fail)  # a second load must come from the cache
        second = lm.read_wikitext(directory)
        again = lm.load_corpus(str(directory))
    assert second.vocab == first.vocab
    for split in ("train", "valid", "test"):
        assert torch.equal(second.split(split), first.split(split))
        assert torch.equal(again.split(split), first.split(split))

    # Changing a file invalidates the entry; the stale entry is replaced, not kept beside the new one.
    (directory / "wiki.test.tokens").write_text("the mat\n", encoding="utf-8")
    third = lm.read_wikitext(directory)
    assert _decoded(third, "test") == ["the", "mat", "<eos>"]
    refreshed = list((directory / ".fastweights-cache").glob("*.pt"))
    assert len(refreshed) == 1 and refreshed != cached

    # Another level or tokenizer is another entry.
    lm.read_wikitext(directory, level="char")
    assert len(list((directory / ".fastweights-cache").glob("*.pt"))) == 2


def test_cache_disabled_writes_nothing(tmp_path):
    directory = _wikitext_dir(tmp_path)
    lm.read_wikitext(directory, cache=False)
    assert not (directory / ".fastweights-cache").exists()
    assert not (tmp_path / "user-cache").exists()


def test_cache_falls_back_to_user_cache_when_data_dir_is_not_writable(tmp_path, monkeypatch):
    directory = _wikitext_dir(tmp_path)
    # A file where the cache directory should be makes the data directory's cache unwritable (even for root).
    (directory / ".fastweights-cache").write_text("not a directory", encoding="utf-8")
    first = lm.read_wikitext(directory)
    user_files = list((tmp_path / "user-cache" / "lm").glob("wikitext-*.pt"))
    assert len(user_files) == 1
    with monkeypatch.context() as m:
        m.setattr(corpora, "_encode_splits", _fail)
        second = lm.read_wikitext(directory)
    assert torch.equal(second.train, first.train)


def test_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path):
    directory = _wikitext_dir(tmp_path)
    first = lm.read_wikitext(directory)
    (path,) = (directory / ".fastweights-cache").glob("*.pt")
    path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match="unreadable LM cache"):
        second = lm.read_wikitext(directory)
    assert torch.equal(second.train, first.train)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm.read_wikitext(directory)  # rewritten: no warning now


# ---------------------------------------------------------------------------------------------------------------------
# Generic text reader
# ---------------------------------------------------------------------------------------------------------------------


def test_read_text_dir_splits_concatenated_files_90_5_5(tmp_path):
    lines_b = [f"b{i} x" for i in range(25)]
    lines_a = [f"a{i} x" for i in range(15)]
    directory = _write(tmp_path / "txt", {"b.txt": "\n".join(lines_b) + "\n", "a.txt": "\n".join(lines_a)})
    (directory / "ignored.md").write_text("zzz\n", encoding="utf-8")
    corpus = lm.read_text_dir(directory)
    all_lines = lines_a + lines_b  # sorted file order; a.txt's missing final newline still ends its last line
    expected = {"train": all_lines[:36], "valid": all_lines[36:38], "test": all_lines[38:]}
    for split, lines in expected.items():
        words = [tok for line in lines for tok in [*line.split(), "<eos>"]]
        assert _decoded(corpus, split) == [tok if tok in corpus.vocab else "<unk>" for tok in words]
    assert "zzz" not in corpus.vocab
    assert lm.load_corpus(str(directory)).vocab == corpus.vocab


def test_read_text_dir_char_level_and_named_splits(tmp_path):
    directory = _write(tmp_path / "chars", {"train.txt": "ab a\n\nba\n", "valid.txt": "ac\n", "test.txt": "b\n"})
    corpus = lm.read_text_dir(directory, level="char")
    assert corpus.level == "char" and corpus.tokenizer is None
    assert _decoded(corpus, "train") == ["a", "b", " ", "a", "<eos>", "<eos>", "b", "a", "<eos>"]
    assert corpus.vocab.tokens == ["<eos>", "a", "b", " ", "<unk>"]
    assert _decoded(corpus, "valid") == ["a", "<unk>", "<eos>"]
    assert lm.load_corpus(str(directory), level="char").vocab == corpus.vocab


def test_read_text_dir_errors(tmp_path):
    partial = _write(tmp_path / "partial", {"train.txt": "a\n", "extra.txt": "b\n"})
    with pytest.raises(FileNotFoundError, match=re.escape(str(partial / "valid.txt"))):
        lm.read_text_dir(partial)
    tiny = _write(tmp_path / "tiny", {"one.txt": "just two\nlines\n"})
    with pytest.raises(ValueError, match="at least 3"):
        lm.read_text_dir(tiny)
    with pytest.raises(ValueError, match="level"):
        lm.read_text_dir(tiny, level="bytes")


# ---------------------------------------------------------------------------------------------------------------------
# Embedded corpus
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded():
    return lm.load_embedded("word", cache=False)


def test_embedded_corpus_sizes(embedded):
    assert embedded.name == "shakespeare" and embedded.tokenizer == "punctuation"
    assert embedded.train.numel() > 500_000
    assert embedded.valid.numel() > 20_000 and embedded.test.numel() > 20_000
    assert 15_000 < len(embedded.vocab) < 30_000
    assert embedded.vocab.eos_id == 0
    unk_rate = (embedded.valid == embedded.vocab.unk_id).float().mean().item()
    assert unk_rate < 0.1
    # Unigram baseline: finite, well above 1, below the vocabulary size.
    ppl = lm.unigram_perplexity(embedded.train, embedded.valid, len(embedded.vocab))
    assert 50 < ppl < len(embedded.vocab)
    print(f"embedded word vocabulary: {len(embedded.vocab)}; {embedded.summary()}; unigram valid ppl {ppl:.1f}")


def test_embedded_splits_are_disjoint_plays():
    root = corpora._embedded_dir()
    texts = {s: gzip.decompress(root.joinpath(f"{s}.txt.gz").read_bytes()).decode("utf-8")
             for s in corpora._EMBEDDED_FILES}
    assert texts["valid"].startswith("Macbeth\nACT I\n")
    assert texts["test"].startswith("Twelfth Night\nACT I\n")
    train_lines = set(texts["train"].split("\n"))
    for split in ("valid", "test"):
        long_lines = [line for line in texts[split].split("\n") if len(line) > 40]
        assert len(long_lines) > 1000
        assert not any(line in train_lines for line in long_lines)
    assert "\nMacbeth\n" not in texts["train"] and "\nTwelfth Night\n" not in texts["train"]
    for text in texts.values():
        assert text.endswith("\n") and "\n\n" not in text and not set("*_#\\") & set(text)


def test_embedded_char_level_and_load_corpus_dispatch(embedded):
    chars = lm.load_corpus("embedded", level="char")
    assert chars.level == "char" and len(chars.vocab) < 100
    assert chars.train.numel() > 2_000_000
    assert "".join(chars.vocab.decode(chars.valid[:8])) == "Macbeth<eos>"
    assert lm.load_corpus(None).vocab == embedded.vocab
    # The embedded corpus is cached in the user cache only.
    assert lm.user_cache_dir() == Path(os.environ["FASTWEIGHTS_CACHE"])
    assert list((lm.user_cache_dir() / "lm").glob("shakespeare-char-*.pt"))
    with pytest.raises(ValueError, match="punctuation"):
        lm.load_corpus("embedded", tokenizer="whitespace")


# ---------------------------------------------------------------------------------------------------------------------
# Batching
# ---------------------------------------------------------------------------------------------------------------------


def test_random_segments_targets_are_shifted_inputs():
    data = torch.arange(100, dtype=torch.int32)
    gen = torch.Generator().manual_seed(0)
    inputs, targets = lm.random_segments(data, batch_size=8, seq_len=10, generator=gen)
    assert inputs.shape == targets.shape == (8, 10)
    assert inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(targets, inputs + 1)  # contiguous windows of data, targets one step ahead
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    assert int(targets.max()) <= 99 and int(inputs.min()) >= 0
    again = lm.random_segments(data, 8, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], inputs)
    # The shortest valid data: exactly seq_len + 1 tokens, every window is the whole of it.
    inputs, targets = lm.random_segments(data[:11], 3, 10)
    assert torch.equal(inputs, data[:10].long().expand(3, 10))
    with pytest.raises(ValueError, match="too short"):
        lm.random_segments(data[:10], 1, 10)
    with pytest.raises(ValueError, match="batch_size"):
        lm.random_segments(data, 0, 10)
    with pytest.raises(ValueError, match="1-D integer"):
        lm.random_segments(data.float(), 1, 10)


def test_stream_batches_columns_are_contiguous_and_continue():
    data = torch.arange(50, dtype=torch.int32)
    batcher = lm.StreamBatcher(data, batch_size=3, seq_len=4)
    # 3 streams of 16 tokens (2 dropped); 15 predictions per stream: 3 windows of 4, then one of 3.
    assert batcher.layout == lm.StreamLayout(num_streams=3, stream_len=16, num_batches=4, predicted_tokens=45,
                                             dropped_tokens=2)
    assert torch.equal(batcher.streams, torch.arange(48, dtype=torch.int32).view(3, 16))
    batches = list(lm.stream_batches(data, 3, 4))
    assert len(batches) == len(batcher) == 4
    assert [b[0].shape[1] for b in batches] == [4, 4, 4, 3]
    for k, (inputs, targets) in enumerate(batches):
        expected = torch.arange(3)[:, None] * 16 + k * 4 + torch.arange(inputs.shape[1])
        assert torch.equal(inputs, expected) and torch.equal(targets, expected + 1)
        assert inputs.dtype == torch.int64
    # Consecutive batches continue each row: concatenated inputs are the row's stream minus its last token.
    rows = torch.cat([b[0] for b in batches], dim=1)
    assert torch.equal(rows, batcher.streams[:, :-1].long())
    assert sum(b[1].numel() for b in batches) == batcher.layout.predicted_tokens
    dropped = list(lm.stream_batches(data, 3, 4, drop_last=True))
    assert len(dropped) == 3 and all(b[0].shape == (3, 4) for b in dropped)
    assert lm.stream_layout(50, 3, 4, drop_last=True).predicted_tokens == 36
    assert torch.equal(batcher.batch(2)[0], batches[2][0])


def test_stream_batches_ranks_partition_the_single_process_columns():
    data = torch.randint(0, 1000, (1003,), generator=torch.Generator().manual_seed(1))
    world, per_rank, seq_len = 3, 2, 7
    single = list(lm.stream_batches(data, per_rank * world, seq_len))
    per_rank_batches = [
        list(lm.stream_batches(data, per_rank, seq_len, rank=r, world_size=world)) for r in range(world)
    ]
    assert all(len(b) == len(single) for b in per_rank_batches)
    for k, (inputs, targets) in enumerate(single):
        assert torch.equal(torch.cat([per_rank_batches[r][k][0] for r in range(world)]), inputs)
        assert torch.equal(torch.cat([per_rank_batches[r][k][1] for r in range(world)]), targets)
    # Rank r's streams are the contiguous columns [r * B, (r + 1) * B) of the global layout.
    layout = lm.stream_layout(data.numel(), per_rank, seq_len, world)
    rank1 = lm.StreamBatcher(data, per_rank, seq_len, rank=1, world_size=world)
    start = per_rank * layout.stream_len
    assert torch.equal(rank1.streams.reshape(-1), data[start : start + per_rank * layout.stream_len])


def test_stream_batches_validation():
    data = torch.arange(20)
    with pytest.raises(ValueError, match="rank"):
        lm.StreamBatcher(data, 2, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="too short"):
        lm.StreamBatcher(data, 6, 4, world_size=2)  # 12 streams of 1 token
    with pytest.raises(ValueError, match="seq_len"):
        lm.StreamBatcher(data, 2, 0)
    with pytest.raises(ValueError, match="world_size"):
        lm.stream_layout(20, 2, 4, world_size=0)
    with pytest.raises(ValueError, match="1-D integer"):
        lm.StreamBatcher(data.view(4, 5), 2, 2)
    with pytest.raises(IndexError, match="index"):
        lm.StreamBatcher(data, 2, 4).batch(3)


# ---------------------------------------------------------------------------------------------------------------------
# Unigram baseline
# ---------------------------------------------------------------------------------------------------------------------


def test_unigram_perplexity():
    train = torch.tensor([0, 0, 1, 1])
    # add-one over a vocabulary of 3: p(0) = p(1) = (2 + 1) / (4 + 3) = 3/7, p(2) = 1/7 (never seen).
    assert lm.unigram_perplexity(train, torch.tensor([0, 1]), 3) == pytest.approx(7 / 3)
    assert lm.unigram_perplexity(train, torch.tensor([2]), 3) == pytest.approx(7.0)
    assert lm.unigram_perplexity(train, torch.tensor([0, 2]), 3) == pytest.approx(math.sqrt(7 / 3 * 7))
    # Smaller k gives less mass to the unseen token: p(2) = 0.5 / 5.5.
    assert lm.unigram_perplexity(train, torch.tensor([2]), 3, k=0.5) == pytest.approx(11.0)
    # A uniform training set gives a perplexity near the vocabulary size.
    uniform = torch.arange(10).repeat(100)
    assert lm.unigram_perplexity(uniform, uniform, 10) == pytest.approx(10.0)
    with pytest.raises(ValueError, match=r"eval_ids: ids must lie in \[0, 3\)"):
        lm.unigram_perplexity(train, torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="k"):
        lm.unigram_perplexity(train, torch.tensor([0]), 3, k=0)
