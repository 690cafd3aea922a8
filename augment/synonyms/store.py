"""A precomputed synonym dictionary in one memory-mapped file, for EDA's hot path.

Looking up neighbours with gensim ``most_similar`` during training is slower than the training
itself (LUSE, section 3.5), so ``luse synonym-cache`` computes every word's neighbours
once with faiss and stores them here. Loading maps the file instead of reading it: it takes
milliseconds for any vocabulary size, and DataLoader workers forked after loading share the
same physical pages.

File layout (version 1, little-endian; every array starts on an 8-byte boundary)::

    offset 0    magic  b"LUSESYN\\0"                        8 bytes
    offset 8    format version (uint32), reserved (uint32)   8 bytes
    offset 16   header length in bytes (uint64)              8 bytes
    offset 24   header: UTF-8 JSON (identity, stats, section table), zero-padded to 8 bytes
    data        sections at the offsets the header gives (relative to the data start):
                words       uint8  [B]       UTF-8 words, concatenated
                offsets     int64  [V + 1]   word i is words[offsets[i]:offsets[i + 1]]
                table       int32  [T]       open-addressing hash table of word ids (-1: empty),
                                             T a power of two >= 2V, slot = crc32(utf8) & (T - 1)
                neighbours  int32  [V, k]    neighbour ids, best first, -1 padding
                scores      float16 [V, k]   cosine similarity (thesaurus synonyms: a fixed score)

The JSON header holds ``identity`` (the sources with size and mtime, and every setting that changes
the result), so :meth:`SynonymCache.load` can refuse a cache built from something else, and
``stats`` (what the build found), and a CRC32 of every section for :meth:`SynonymCache.verify`.

Example::

    from luse.augment.synonyms.build import load_or_build_default

    cache = load_or_build_default()          # builds ~/.cache/luse/synonyms-zh.lsc on first use
    cache.synonyms("美丽")                   # ['优美', '漂亮', ...]
    cache.neighbours("美丽")[:2]             # [('优美', 1.0), ('漂亮', 1.0)]
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import mmap
import os
import struct
import sys
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from luse.errors import InputError
from luse.io import atomic_open, cleanup_stale

logger = logging.getLogger(__name__)

MAGIC = b"LUSESYN\x00"
VERSION = 1
FORMAT_NAME = "luse-synonym-cache"
DEFAULT_FILE_NAME = "synonyms-zh.lsc"
_PREAMBLE = struct.Struct("<8sIIQ")
_SECTIONS = (("words", "u1"), ("offsets", "<i8"), ("table", "<i4"), ("neighbours", "<i4"), ("scores", "<f2"))


class CacheFormatError(InputError):
    """The file is not a synonym cache this version can read: wrong magic, newer version, truncated, corrupt."""


class CacheMismatchError(InputError):
    """The cache is valid but was built from other sources or with other settings than expected."""


def default_cache_path() -> Path:
    """``$LUSE_CACHE_DIR/synonyms-zh.lsc`` if that variable is set, else ``~/.cache/luse/synonyms-zh.lsc``."""
    root = os.environ.get("LUSE_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "luse") / DEFAULT_FILE_NAME


# --------------------------------------------------------------------------- writing


def write_cache(path: str | os.PathLike, words: Sequence[str], neighbours: np.ndarray, scores: np.ndarray, *,
                identity: Mapping[str, Any], stats: Mapping[str, Any] | None = None) -> Path:
    """Write a cache file atomically and return its path.

    The file is written to a temporary file in the same directory, flushed with ``fsync`` and
    then renamed over ``path`` (``os.replace``), so readers see the old file or the new one, never
    a half-written one, and an error while writing leaves an existing cache untouched.

    Args:
        path: where to write; parent directories are created.
        words: the vocabulary; unique, non-empty strings.
        neighbours: int32-compatible ``[V, k]`` neighbour ids, best first, ``-1`` after the last.
        scores: ``[V, k]`` similarities (stored as float16); ignored where ``neighbours`` is -1.
        identity: JSON-serialisable description of sources and settings; compared on load.
        stats: JSON-serialisable facts about the build, shown by ``cache.header["stats"]``.
    """
    path = Path(path)
    neighbours = np.asarray(neighbours)
    scores = np.asarray(scores)
    vocab_size = len(words)
    if neighbours.ndim != 2 or neighbours.shape[0] != vocab_size or scores.shape != neighbours.shape:
        raise ValueError(f"neighbours and scores must both be [{vocab_size}, k], got {neighbours.shape} "
                         f"and {scores.shape}")
    if vocab_size and (neighbours.min(initial=-1) < -1 or neighbours.max(initial=-1) >= vocab_size):
        raise ValueError("neighbour ids must be -1 (padding) or valid word ids")
    k = int(neighbours.shape[1])
    encoded = [word.encode("utf-8") for word in words]
    if any(not item for item in encoded):
        raise ValueError("words must be non-empty strings")
    if len(set(encoded)) != vocab_size:
        raise ValueError("words must be unique")
    lengths = np.fromiter((len(item) for item in encoded), dtype=np.int64, count=vocab_size)
    offsets = np.zeros(vocab_size + 1, dtype="<i8")
    np.cumsum(lengths, out=offsets[1:])
    arrays = {
        "words": np.frombuffer(b"".join(encoded), dtype=np.uint8),
        "offsets": offsets,
        "table": _hash_table(encoded),
        "neighbours": np.where(neighbours >= 0, neighbours, -1).astype("<i4"),
        "scores": np.where(neighbours >= 0, scores, 0).astype("<f2"),
    }
    sections, cursor = {}, 0
    for name, dtype in _SECTIONS:
        array = np.ascontiguousarray(arrays[name], dtype=dtype)
        sections[name] = {"offset": cursor, "dtype": dtype, "shape": list(array.shape),
                          "crc32": zlib.crc32(memoryview(array).cast("B"))}
        arrays[name] = array
        cursor = _align8(cursor + array.nbytes)
    header = {
        "format": FORMAT_NAME,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "vocab_size": vocab_size,
        "k": k,
        "identity": json_roundtrip(identity),
        "stats": json_roundtrip(stats or {}),
        "sections": sections,
        "data_bytes": cursor,
    }
    blob = json.dumps(header, ensure_ascii=False, sort_keys=True).encode("utf-8")
    data_start = _align8(_PREAMBLE.size + len(blob))

    path.parent.mkdir(parents=True, exist_ok=True)
    cleanup_stale(path.parent)  # the temp file of a killed earlier write (it can be gigabytes)
    with atomic_open(path, "wb") as stream:
        stream.write(_PREAMBLE.pack(MAGIC, VERSION, 0, len(blob)))
        stream.write(blob)
        stream.write(b"\0" * (data_start - _PREAMBLE.size - len(blob)))
        written = 0
        for name, _ in _SECTIONS:
            stream.write(b"\0" * (sections[name]["offset"] - written))
            stream.write(memoryview(arrays[name]).cast("B"))
            written = sections[name]["offset"] + arrays[name].nbytes
        stream.write(b"\0" * (cursor - written))
    return path



def _hash_table(encoded: list[bytes]) -> np.ndarray:
    """Linear-probing table of word ids, filled in vectorised rounds.

    In each round, every free slot that unplaced words point at goes to the first of them; the
    others move on one slot. Slots never empty again, so the path from each word's home slot to
    its final slot is fully occupied, just as if the words had been inserted one at a time.
    """
    size = 1 << max(3, (2 * len(encoded) - 1).bit_length())  # load factor <= 0.5
    table = np.full(size, -1, dtype="<i4")
    hashes = np.fromiter((zlib.crc32(item) for item in encoded), dtype=np.int64, count=len(encoded))
    pending = np.arange(len(encoded), dtype=np.int64)
    slots = hashes & (size - 1)
    while len(pending):
        free = np.flatnonzero(table[slots] == -1)
        claimed, first = np.unique(slots[free], return_index=True)
        winners = free[first]
        table[claimed] = pending[winners]
        placed = np.zeros(len(pending), dtype=bool)
        placed[winners] = True
        pending, slots = pending[~placed], (slots[~placed] + 1) & (size - 1)
    return table


# --------------------------------------------------------------------------- reading


class SynonymCache:
    """A read-only, memory-mapped synonym dictionary.

    Lookups go through a hash table stored in the file, so nothing is built at load time and no
    per-process dictionary of the vocabulary is needed: a first lookup costs a microsecond or
    two, and a small LRU memo answers repeated words in a fraction of that (measured by
    ``benchmarks/synonym_cache.py``). The object pickles as its path, so it can be handed to
    spawned DataLoader workers, which then map the same file.

    Attributes:
        path: the file.
        header: the parsed JSON header (``identity``, ``stats``, ``k``, ``vocab_size``, ...).
        neighbour_ids: int32 ``[V, k]`` array on the mapped file (-1 padding).
        scores: float16 ``[V, k]`` array on the mapped file.
    """

    def __init__(self, path: Path, mapped: mmap.mmap, header: dict[str, Any], data_start: int,
                 memo_size: int = 65536):
        self.path, self.header = path, header
        self._map = mapped
        self._k = int(header["k"])
        self._size = int(header["vocab_size"])
        sections = {name: data_start + spec["offset"] for name, spec in header["sections"].items()}
        self._starts = sections
        view = memoryview(mapped)
        table_len = int(header["sections"]["table"]["shape"][0])
        self._offsets = view[sections["offsets"]:sections["offsets"] + 8 * (self._size + 1)].cast("q")
        self._table = view[sections["table"]:sections["table"] + 4 * table_len].cast("i")
        self._mask = table_len - 1
        self._probe_limit = range(table_len)
        self._ids_start, self._scores_start = sections["neighbours"], sections["scores"]
        self._words_start = sections["words"]
        self._row_ids = struct.Struct(f"<{self._k}i")
        self._row_scores = struct.Struct(f"<{self._k}e")
        self.neighbour_ids = np.frombuffer(mapped, dtype="<i4", count=self._size * self._k,
                                           offset=self._ids_start).reshape(self._size, self._k)
        self.scores = np.frombuffer(mapped, dtype="<f2", count=self._size * self._k,
                                    offset=self._scores_start).reshape(self._size, self._k)
        # Words repeat (Zipf), so a small memo makes most EDA lookups a dict hit. Per instance and
        # per process: forked workers each warm their own.
        self._memo_size = memo_size
        self._memo_synonyms = functools.lru_cache(maxsize=memo_size)(self._lookup_synonyms)
        self._memo_neighbours = functools.lru_cache(maxsize=memo_size)(self._lookup_neighbours)

    # -- opening

    @classmethod
    def load(cls, path: str | os.PathLike, expect: Mapping[str, Any] | None = None, *,
             verify: bool = False, memo_size: int = 65536) -> SynonymCache:
        """Map a cache file.

        Args:
            path: the ``.lsc`` file.
            expect: the identity the caller needs (e.g. ``BuildConfig.identity()``); if given and
                the file's differs, :class:`CacheMismatchError` says which sources or settings
                differ, so the caller can rebuild (``--force``) instead of using stale synonyms.
            verify: also check every section's CRC32 (reads the whole file once).
            memo_size: words whose results are remembered (LRU) by ``synonyms``/``neighbours``;
                0 turns the memo off.

        Raises:
            FileNotFoundError: no such file.
            CacheFormatError: not a cache, a newer format version, truncated or corrupt.
            CacheMismatchError: built from other sources or settings than ``expect``.
        """
        path = Path(path)
        if sys.byteorder != "little":
            raise OSError("synonym caches are little-endian; this reader needs a little-endian machine")
        with open(path, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size < _PREAMBLE.size:
                raise CacheFormatError(path, "a luse synonym cache", got=f"a {size}-byte file")
            mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            header, data_start = _read_header(path, mapped, size)
            cache = cls(path, mapped, header, data_start, memo_size)
        except BaseException:
            with contextlib.suppress(BufferError):  # views made before the failure keep it open
                mapped.close()
            raise
        if expect is not None:
            _check_identity(path, header.get("identity"), expect)
        if verify:
            cache.verify()
        return cache

    def verify(self) -> None:
        """Check every section against the CRC32 stored in the header (raises :class:`CacheFormatError`)."""
        for name, _ in _SECTIONS:  # their offsets, shapes and dtypes were checked when loading
            spec = self.header["sections"][name]
            start = self._starts[name]
            length = int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(spec["dtype"]).itemsize
            # .get: a damaged header may have lost the checksum's key (found by tests/test_fuzz.py)
            if zlib.crc32(memoryview(self._map)[start:start + length]) != spec.get("crc32"):
                raise CacheFormatError(self.path, f"section {name!r} matching its checksum", got="different bytes")
        ids = self.neighbour_ids
        if ids.size and (ids.min() < -1 or ids.max() >= self._size):
            raise CacheFormatError(self.path, "neighbour ids within the vocabulary", got="out-of-range ids")

    def close(self) -> None:
        """Release the mapping (arrays taken from ``neighbour_ids``/``scores`` must not be used afterwards)."""
        self._memo_synonyms.cache_clear()
        self._memo_neighbours.cache_clear()
        self._offsets.release()
        self._table.release()
        del self.neighbour_ids, self.scores
        try:
            self._map.close()
        except BufferError:  # someone still holds an array view; the mapping goes with it
            pass

    def __enter__(self) -> SynonymCache:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __reduce__(self):
        return (_reopen, (str(self.path), self._memo_size))

    # -- lookups (the EDA hot path: keep these lean)

    def index(self, word: str) -> int:
        """The id of ``word``, or -1 if it is not in the cache."""
        try:
            key = word.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: cannot be in a UTF-8 vocabulary
            return -1
        table, offsets, mapped, mask = self._table, self._offsets, self._map, self._mask
        start = self._words_start
        slot = zlib.crc32(key) & mask
        for _ in self._probe_limit:  # the table always has empty slots; the bound guards a corrupt file
            candidate = table[slot]
            if candidate < 0:
                return -1
            if mapped[start + offsets[candidate]:start + offsets[candidate + 1]] == key:
                return candidate
            slot = (slot + 1) & mask
        return -1

    def neighbours(self, word: str) -> list[tuple[str, float]]:
        """``[(neighbour, score), ...]``, best first; ``[]`` for an unknown word or one without synonyms."""
        try:
            return list(self._memo_neighbours(word))
        except (UnicodeDecodeError, IndexError) as error:
            raise self._corrupt(error) from None

    def synonyms(self, word: str) -> list[str]:
        """Neighbours of ``word`` without scores, best first; ``[]`` when there are none."""
        try:
            return list(self._memo_synonyms(word))
        except (UnicodeDecodeError, IndexError) as error:
            raise self._corrupt(error) from None

    def _corrupt(self, error: Exception) -> CacheFormatError:
        # Loading without verify=True checks the structure, not every byte: damaged word bytes or
        # neighbour ids only show up here, and must not surface as a bare decode or index error.
        return CacheFormatError(self.path, "an intact synonym cache (SynonymCache.load(path, verify=True) "
                                "checks every byte; rebuild it with --force)", got=f"{type(error).__name__}: {error}")

    def _row_words(self, row: int) -> list[str]:
        ids = self._row_ids.unpack_from(self._map, self._ids_start + 4 * self._k * row)
        offsets, mapped, start = self._offsets, self._map, self._words_start
        return [mapped[start + offsets[i]:start + offsets[i + 1]].decode("utf-8") for i in ids if i >= 0]

    def _lookup_synonyms(self, word: str) -> tuple[str, ...]:
        row = self.index(word)
        return tuple(self._row_words(row)) if row >= 0 else ()

    def _lookup_neighbours(self, word: str) -> tuple[tuple[str, float], ...]:
        row = self.index(word)
        if row < 0:
            return ()
        scores = self._row_scores.unpack_from(self._map, self._scores_start + 2 * self._k * row)
        return tuple(zip(self._row_words(row), scores))

    def word(self, index: int) -> str:
        """The word with id ``index``."""
        if not 0 <= index < self._size:
            raise IndexError(f"word id {index} out of range for a vocabulary of {self._size}")
        start = self._words_start
        try:
            return self._map[start + self._offsets[index]:start + self._offsets[index + 1]].decode("utf-8")
        except UnicodeDecodeError as error:
            raise self._corrupt(error) from None

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and self.index(word) >= 0

    def __len__(self) -> int:
        return self._size

    @property
    def k(self) -> int:
        """Neighbour slots per word."""
        return self._k

    @property
    def vocab(self) -> Vocabulary:
        """The words, as a read-only sequence decoded on access (``cache.vocab[i]``, ``list(cache.vocab)``)."""
        return Vocabulary(self)

    def __repr__(self) -> str:
        return f"SynonymCache({str(self.path)!r}, words={self._size}, k={self._k})"


class Vocabulary(Sequence):
    """The cache's words, decoded from the mapped file on access."""

    def __init__(self, cache: SynonymCache):
        self._cache = cache

    def __len__(self) -> int:
        return len(self._cache)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._cache.word(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        return self._cache.word(index)

    def __contains__(self, word: object) -> bool:
        return word in self._cache

    def index(self, word, start: int = 0, stop: int | None = None) -> int:
        position = self._cache.index(word) if isinstance(word, str) else -1
        if position < 0 or position < start or (stop is not None and position >= stop):
            raise ValueError(f"{word!r} is not in the synonym cache")
        return position


def _reopen(path: str, memo_size: int) -> SynonymCache:
    return SynonymCache.load(path, memo_size=memo_size)


def _read_header(path: Path, mapped: mmap.mmap, size: int) -> tuple[dict, int]:
    magic, version, _, header_len = _PREAMBLE.unpack_from(mapped, 0)
    if magic != MAGIC:
        raise CacheFormatError(path, f"a luse synonym cache (magic {MAGIC!r})", got=repr(magic))
    if version != VERSION:
        raise CacheFormatError(path, f"format version {VERSION} (rebuild the cache with this luse)",
                               got=f"version {version}")
    data_start = _align8(_PREAMBLE.size + header_len)
    if data_start > size:
        raise CacheFormatError(path, f"at least {data_start} bytes (the header alone)", got=f"{size} (truncated)")
    try:
        header = json.loads(bytes(mapped[_PREAMBLE.size:_PREAMBLE.size + header_len]).decode("utf-8"))
        sections = header["sections"]
        expected_size = data_start + int(header["data_bytes"])
        vocab_size, k = int(header["vocab_size"]), int(header["k"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise CacheFormatError(path, "a JSON header with sections, vocab_size and k",
                               got=f"{type(error).__name__}: {error}") from None
    if size < expected_size:
        raise CacheFormatError(path, f"{expected_size} bytes", got=f"{size} (truncated)")
    try:
        _check_sections(path, sections, vocab_size, k, int(header["data_bytes"]))
        offsets = np.frombuffer(mapped, dtype="<i8", count=vocab_size + 1,
                                offset=data_start + sections["offsets"]["offset"])
    except CacheFormatError:
        raise
    except (TypeError, ValueError, KeyError) as error:
        raise CacheFormatError(path, "a well-formed section table", got=f"{type(error).__name__}: {error}") from None
    if offsets[0] != 0 or offsets[-1] != sections["words"]["shape"][0]:
        raise CacheFormatError(path, "word offsets spanning the word bytes", got=f"{offsets[0]}..{offsets[-1]}")
    table = np.frombuffer(mapped, dtype="<i4", count=sections["table"]["shape"][0],
                          offset=data_start + sections["table"]["offset"])
    # Lookups index the offsets with these ids, so check them now (one vectorised pass).
    if table.size and (table.min() < -1 or table.max() >= vocab_size or int((table >= 0).sum()) != vocab_size):
        raise CacheFormatError(path, f"a hash table of {vocab_size} word ids", got="other values")
    return header, data_start


def _check_sections(path: Path, sections: dict, vocab_size: int, k: int, data_bytes: int) -> None:
    shapes = {"offsets": [vocab_size + 1], "neighbours": [vocab_size, k], "scores": [vocab_size, k]}
    for name, dtype in _SECTIONS:
        spec, shape = sections.get(name), shapes.get(name)
        if not isinstance(spec, dict) or spec.get("dtype") != dtype or (shape is not None and spec.get("shape") != shape):
            raise CacheFormatError(path, f"a {name!r} section of {dtype} {shapes.get(name, '')}", got=repr(spec))
        offset = int(spec["offset"])
        end = offset + int(np.prod(spec["shape"], dtype=np.int64)) * np.dtype(dtype).itemsize
        if offset % 8 or offset < 0 or end > data_bytes:
            raise CacheFormatError(path, f"section {name!r} inside the file on an 8-byte boundary",
                                   got=f"offset {offset}, end {end}")
    table_len = int(sections["table"]["shape"][0])
    if table_len & (table_len - 1) or table_len < 2 * vocab_size:
        raise CacheFormatError(path, "a power-of-two hash table at least twice the vocabulary", got=str(table_len))


def _check_identity(path: Path, found: Any, expect: Mapping[str, Any]) -> None:
    wanted = json_roundtrip(expect)
    if found == wanted:
        return
    differences = _differences(found, wanted)
    shown = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3 else "")
    raise CacheMismatchError(path, "a cache built from the requested sources and settings (rebuild it with "
                             "`luse synonym-cache --force`)", got=shown)


def _differences(found: Any, wanted: Any, where: str = "") -> list[str]:
    if isinstance(found, dict) and isinstance(wanted, dict):
        out = []
        for key in sorted(set(found) | set(wanted), key=str):
            out += _differences(found.get(key, "<missing>"), wanted.get(key, "<missing>"), f"{where}.{key}".lstrip("."))
        return out
    if isinstance(found, list) and isinstance(wanted, list) and len(found) == len(wanted):
        out = []
        for number, (left, right) in enumerate(zip(found, wanted)):
            out += _differences(left, right, f"{where}[{number}]")
        return out
    return [] if found == wanted else [f"{where or 'identity'} is {_brief(found)}, expected {_brief(wanted)}"]


def _brief(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_roundtrip(value: Any) -> Any:
    """Normalise to what JSON gives back (tuples become lists, keys strings), so comparisons are fair."""
    return json.loads(json.dumps(value, ensure_ascii=False, sort_keys=True))


def _align8(value: int) -> int:
    return (value + 7) & ~7
