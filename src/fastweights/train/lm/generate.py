"""Generation and the vocabulary of a run: prompts to tokens, step decoding, tokens to text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...data.lm import (
    EOS,
    LEVELS,
    TOKENIZERS,
    LMCorpus,
    Vocabulary,
    tokenize,
)
from ...fields import check_positive_int
from ...models.lm import LanguageModel
from ...runs.directory import (
    read_json_file,
    write_json,
)

#: The file of a run (and of an export) that holds its vocabulary and tokenisation (:class:`LMVocab`).
VOCAB_FILE = "vocab.json"


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Generation:
    """A decoded continuation: ``prompt_ids``, the new ``ids`` and their ``tokens`` and ``text``."""

    prompt_ids: list[int]
    ids: list[int]
    tokens: list[str]
    text: str
    level: str = "word"
    tokenizer: str | None = "whitespace"

    def after(self, prompt: str) -> str:
        """``prompt`` followed by the continuation, with a space between them where the tokens need one."""
        glued = self.level == "char" or not prompt or prompt.endswith((" ", "\n")) or self.text.startswith("\n") \
            or (self.tokenizer == "punctuation" and bool(self.tokens) and self.tokens[0] in _NO_SPACE_BEFORE)
        return prompt + ("" if glued else " ") + self.text


def encode_prompt(vocab: Vocabulary, prompt: str, level: str = "word", tokenizer: str = "whitespace") -> list[int]:
    """Token ids of ``prompt`` as the corpus readers make them: its lines joined by ``<eos>`` (no ``<eos>`` after the
    last line, which the model continues); an empty prompt is a lone ``<eos>`` (the start of a line)."""
    ids: list[int] = []
    lines = prompt.split("\n")
    for i, line in enumerate(lines):
        ids.extend(vocab.encode(tokenize(line, level, tokenizer)))
        if i < len(lines) - 1:
            ids.append(vocab.eos_id)
    return ids or [vocab.eos_id]


_NO_SPACE_BEFORE = frozenset(",.;:?!)]}")
_NO_SPACE_AFTER = frozenset("([{")


def detokenize(tokens: list[str], level: str = "word", tokenizer: str | None = "whitespace") -> str:
    """Text of tokens: ``<eos>`` becomes a line end; characters are joined by nothing, words by spaces (with the
    ``punctuation`` tokenizer, none before closing punctuation and none after an opening bracket)."""
    if level == "char":
        return "".join("\n" if t == EOS else t for t in tokens)
    glue = tokenizer == "punctuation"
    out: list[str] = []
    for t in tokens:
        if t == EOS:
            out.append("\n")
        elif out and out[-1] != "\n" and not (glue and (t in _NO_SPACE_BEFORE or out[-1] in _NO_SPACE_AFTER)):
            out.extend((" ", t))
        else:
            out.append(t)
    return "".join(out)


@torch.no_grad()
def generate(model: LanguageModel, vocab: Vocabulary, prompt: str, max_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None, *, level: str = "word",
             tokenizer: str = "whitespace") -> Generation:
    """Continue the text ``prompt`` by ``max_tokens`` tokens with :meth:`LanguageModel.generate` (step decoding:
    constant memory per token for fast-weight layers; ``temperature`` 0 = greedy, else sampling among the ``top_k``
    most likely with a generator seeded by ``seed``). ``level``/``tokenizer`` must be those of the corpus (prompt
    encoding). Models with reversed positions (the paper's truncated-context setting) cannot be decoded step by step
    and are refused: train with ``position_order=forward`` or ``positional_encoding=none`` (``--carry-state``).
    """
    if not isinstance(model, LanguageModel):
        raise TypeError(f"model: expected a LanguageModel, got {type(model).__name__}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt: expected a str, got {type(prompt).__name__}")
    check_positive_int("max_tokens", max_tokens)
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"vocab: {len(vocab)} tokens, but the model has vocab_size {model.config.vocab_size}")
    prompt_ids = encode_prompt(vocab, prompt, level, tokenizer)
    device = model.embedding.weight.device
    out = model.generate(torch.tensor(prompt_ids, device=device), max_tokens, temperature, top_k, seed).tolist()
    tokens = vocab.decode(out)
    return Generation(prompt_ids, out, tokens, detokenize(tokens, level, tokenizer), level, tokenizer)


@dataclass
class LMVocab:
    """The vocabulary of a language-model run and how text becomes its tokens (``vocab.json`` of the run).

    ``level`` is ``"word"`` or ``"char"``; ``tokenizer`` the word tokenizer (``"whitespace"`` or ``"punctuation"``;
    None at char level).
    """

    vocab: Vocabulary
    level: str = "word"
    tokenizer: str | None = "whitespace"

    @classmethod
    def of(cls, corpus: LMCorpus) -> LMVocab:
        """The vocabulary and tokenisation of a corpus."""
        return cls(corpus.vocab, corpus.level, corpus.tokenizer)

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a text as the corpus readers make them (see :func:`encode_prompt`)."""
        return encode_prompt(self.vocab, prompt, self.level, self.tokenizer or "whitespace")

    def decode(self, ids: list[int] | Tensor) -> str:
        """The text of token ids (see :func:`detokenize`)."""
        return detokenize(self.vocab.decode(ids), self.level, self.tokenizer)

    def generate(self, model: LanguageModel, prompt: str, max_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None) -> Generation:
        """:func:`generate` with this vocabulary and tokenisation."""
        return generate(model, self.vocab, prompt, max_tokens, temperature, top_k, seed, level=self.level,
                        tokenizer=self.tokenizer or "whitespace")

    def to_dict(self) -> dict[str, Any]:
        return {**self.vocab.to_dict(), "level": self.level, "tokenizer": self.tokenizer}

    @classmethod
    def from_dict(cls, data: Any, source: str = "vocabulary") -> LMVocab:
        vocab = Vocabulary.from_dict(data, source)
        level, tokenizer = data.get("level"), data.get("tokenizer")
        if level not in LEVELS:
            raise ValueError(f"{source}: level: expected one of {list(LEVELS)}, got {level!r}")
        if tokenizer not in ((None,) if level == "char" else TOKENIZERS):
            raise ValueError(f"{source}: tokenizer: expected one of {list(TOKENIZERS)} (none at char level), got "
                             f"{tokenizer!r}")
        return cls(vocab, level, tokenizer)

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> LMVocab:
        return cls.from_dict(read_json_file(Path(path), "vocabulary"), str(path))
