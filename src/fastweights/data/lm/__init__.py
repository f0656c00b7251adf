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

from .batches import StreamBatcher, StreamLayout, random_segments, stream_batches, stream_layout, unigram_perplexity
from .corpora import load_corpus, load_embedded, read_text_dir, read_wikitext, wikitext_files
from .vocab import (
    CACHE_VERSION,
    EMBEDDED_NAME,
    EOS,
    LEVELS,
    PUNCTUATION_PATTERN,
    TOKENIZERS,
    UNK,
    LMCorpus,
    Vocabulary,
    tokenize,
    user_cache_dir,
)

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
