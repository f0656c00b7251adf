"""The vocabulary of a language-model run as a transformers tokenizer (extra ``hf``): what
``AutoTokenizer.from_pretrained(export_dir)`` reads (see :mod:`fastweights.hf` for the rules)."""

from __future__ import annotations

import os
from pathlib import Path

try:
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast
except ImportError as e:  # the core package must work without the extra
    raise ImportError(f"the tokenizer files need the hf extra: pip install 'fastweights[hf]' ({e})") from e

from ...data.lm import EOS, PUNCTUATION_PATTERN, UNK
from .generate import LMVocab


def build_tokenizer(vocab: LMVocab) -> PreTrainedTokenizerFast:
    """The run's vocabulary as a ``PreTrainedTokenizerFast`` over a ``tokenizers`` word-level model (see the module
    docstring for the rules)."""
    model = WordLevel({token: i for i, token in enumerate(vocab.vocab.tokens)}, unk_token=UNK)
    tok = Tokenizer(model)
    if vocab.level == "char":
        tok.normalizer = normalizers.Replace("\n", EOS)
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(f"{EOS}|."), behavior="isolated")
        tok.decoder = decoders.Sequence([decoders.Replace(EOS, "\n"), decoders.Fuse()])
    else:
        tok.normalizer = normalizers.Replace("\n", f" {EOS} ")
        split = [pre_tokenizers.WhitespaceSplit()]
        if vocab.tokenizer == "punctuation":
            split.append(pre_tokenizers.Split(Regex(PUNCTUATION_PATTERN), behavior="isolated"))
        tok.pre_tokenizer = pre_tokenizers.Sequence(split)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, bos_token=EOS,
                                   model_input_names=["input_ids", "attention_mask"])


def save_tokenizer(vocab: LMVocab, out_dir: str | os.PathLike) -> list[Path]:
    """Write the files ``AutoTokenizer.from_pretrained(out_dir)`` reads (``tokenizer.json``,
    ``tokenizer_config.json``, ...); returns the paths written."""
    return [Path(p) for p in build_tokenizer(vocab).save_pretrained(str(out_dir))]
