"""Data readers: streaming unlabelled corpora, sentence splitting, skip accounting, supervised sets.

Everything that reads a corpus is a generator, so corpora of 100M+ sentences stream through a
fixed amount of memory.  The trainer's entry point is :func:`sentence_stream`.
"""

from luse.data.corpus import (
    DEFAULT_DEDUP_BITS,
    EXTENSIONS,
    FORMATS,
    PEOPLES_DAILY,
    BloomFilter,
    clean_texts,
    corpus_files,
    epoch_seed,
    file_format,
    iter_byte_lines,
    iter_corpus,
    normalize_whitespace,
    open_binary,
    peoples_daily_sentences,
    read_lines,
    sentence_stream,
    shuffle_buffer,
)
from luse.data.skips import SkipCounter
from luse.data.splitter import split_sentences, strip_pos_tags
from luse.data.supervised import read_pairs, read_triplets

__all__ = [
    "DEFAULT_DEDUP_BITS",
    "EXTENSIONS",
    "FORMATS",
    "PEOPLES_DAILY",
    "BloomFilter",
    "SkipCounter",
    "clean_texts",
    "corpus_files",
    "epoch_seed",
    "file_format",
    "iter_byte_lines",
    "iter_corpus",
    "normalize_whitespace",
    "open_binary",
    "peoples_daily_sentences",
    "read_lines",
    "read_pairs",
    "read_triplets",
    "sentence_stream",
    "shuffle_buffer",
    "split_sentences",
    "strip_pos_tags",
]
