"""Reading word2vec text files fast (luse.augment.synonyms.sources): the same words and float32 bits as gensim.

gensim's ``KeyedVectors.load_word2vec_format`` is the reference: every good file must give the
same words in the same order and bitwise-equal vectors, every bad one an ``InputError`` naming the
file and the line that the slow record-by-record scan (``find_word2vec_problem``) names.
"""

from __future__ import annotations

import bz2
import gzip
import os
import tracemalloc
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from luse.augment.synonyms import sources

from luse.errors import InputError


def gensim_vectors(path, limit=None, unicode_errors="strict"):
    """gensim's words and raw float32 vectors, or None where gensim fails."""
    from gensim.models import KeyedVectors

    try:
        kv = KeyedVectors.load_word2vec_format(str(path), binary=False, limit=limit, unicode_errors=unicode_errors)
    except Exception:  # noqa: BLE001 - any failure of the reference means "bad file"
        return None
    # gensim 4.4 keeps a None key and an unused row at the end for each repeated word: not data.
    return kv.index_to_key[:kv.next_index], kv.vectors[:kv.next_index]


def fast_vectors(path, limit=None, unicode_errors="strict"):
    """Our words and raw (not yet normalised) vectors, repeated words dropped as load_word2vec does."""
    count, dim = sources.read_word2vec_header(path)
    wanted = count if limit is None else min(count, limit)
    words, vectors = sources.read_word2vec_text(path, dim, wanted, unicode_errors=unicode_errors, progress=False)
    words, vectors, _ = sources.drop_repeated_words(words, vectors)
    return words, vectors


def assert_same_bits(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.dtype == reference.dtype == np.float32 and ours.shape == reference.shape
    nan = np.isnan(reference)
    assert (np.isnan(ours) == nan).all()
    assert (ours.view(np.uint32)[~nan] == reference.view(np.uint32)[~nan]).all()


def assert_matches_gensim(path, limit=None, unicode_errors="strict"):
    reference = gensim_vectors(path, limit, unicode_errors)
    assert reference is not None, "the reference failed on a file meant to be good"
    words, vectors = fast_vectors(path, limit, unicode_errors)
    assert words == reference[0]
    assert_same_bits(vectors, reference[1])
    return words, vectors


def midpoint_strings(count: int, seed: int = 0) -> list[str]:
    """Decimals just off the midpoint of two float32 neighbours: decimal -> float64 -> float32 rounds
    them differently from a direct decimal -> float32 parse, so only gensim's own route matches."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        low = np.float32(rng.standard_normal())
        high = np.nextafter(low, np.float32(np.inf))
        middle = (Decimal(float(low)) + Decimal(float(high))) / 2
        nudge = Decimal(2) ** -60 * abs(middle) * (1 if rng.random() < 0.5 else -1)
        out.append(format(middle + nudge, "f")[:40])
    return out


def number_strings(rng, count: int) -> list[str]:
    styles = [lambda x: f"{x:.6f}", repr, lambda x: f"{x:.3e}", lambda x: f"{x:g}", lambda x: str(int(x * 10)),
              lambda x: f"{x:+.2E}", lambda x: f"{x:.20f}", lambda x: f"{x * 1e-7:.9e}"]
    values = rng.standard_normal(count) * 3
    return [styles[i % len(styles)](float(v)) for i, v in enumerate(values)]


def write_lines(path, header: str, lines: list[str], ending: str = "\n", final_newline: bool = True):
    text = ending.join([header, *lines]) + (ending if final_newline else "")
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few hundred bytes, so a small file crosses many block and line boundaries."""
    monkeypatch.setattr(sources, "TEXT_BLOCK_BYTES", 300)


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize("block_bytes", [300, 1 << 25])
def test_matches_gensim_bit_for_bit(tmp_path, monkeypatch, block_bytes):
    monkeypatch.setattr(sources, "TEXT_BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(1)
    dim, count = 7, 120
    hard = iter(midpoint_strings(count * dim // 2))
    lines = []
    for row in range(count):
        numbers = number_strings(rng, dim)
        if row % 2:  # every other row: decimals that only decimal -> float64 -> float32 rounds as gensim does
            numbers = [next(hard) for _ in range(dim)]
        word = ["的", "美丽", "word", "C++", "e-mail", "1e5", '"quoted"', "#hash", "東京", "\u3000x"][row % 10] + str(row)
        lines.append(word + " " + " ".join(numbers))
    lines[3] = "ints " + " ".join(str(i - 3) for i in range(dim))
    lines[5] = "exps " + " ".join(["1e-05", "-3E+02", "+0.5", ".5", "5.", "00012", "1e0"])
    path = write_lines(tmp_path / "v.txt", f"{count} {dim}", lines)

    def no_fallback(*args):
        raise AssertionError("a clean file fell back to the per-line parser")

    monkeypatch.setattr(sources, "_text_record", no_fallback)  # so the equality above is pyarrow's
    words, vectors = assert_matches_gensim(path)
    assert len(words) == count and vectors.flags.c_contiguous and vectors.flags.owndata


@pytest.mark.parametrize("ending, final_newline", [("\r\n", True), ("\r\n", False), (" \n", True), (" \t \n", True),
                                                   ("\n", False), ("  \r\n", True)])
def test_line_ends_are_stripped_like_gensim(tmp_path, monkeypatch, small_blocks, ending, final_newline):
    rng = np.random.default_rng(2)
    lines = [f"w{row} " + " ".join(number_strings(rng, 3)) for row in range(40)]
    path = write_lines(tmp_path / "v.txt", "40 3", lines, ending, final_newline)
    monkeypatch.setattr(sources, "_text_record", None)  # stripped line ends still go through pyarrow
    assert_matches_gensim(path)


def test_stray_whitespace_and_odd_words_fall_back_to_gensim_rules(tmp_path, small_blocks):
    # A \r inside a word, a leading BOM, tabs next to numbers, a value 1_0 and a full-width digit: pyarrow
    # would read some of these differently, so those blocks go through gensim's per-line rules.
    lines = ["a\rb 1 2", "\ufeffbom 3 4", "tab \t1 2\t", "under 1_0 2", "wide １ 2", "empty  ", "x 5 6"]
    lines[5] = " 7 8"  # an empty word, as gensim reads it
    path = write_lines(tmp_path / "v.txt", "7 2", lines)
    words, vectors = assert_matches_gensim(path)
    assert words[:3] == ["a\rb", "\ufeffbom", "tab"] and words[5] == ""
    assert vectors[3, 0] == 10 and vectors[4, 0] == 1


def test_limit_repeats_and_compression(tmp_path, small_blocks):
    rng = np.random.default_rng(3)
    words = [f"w{row % 30}" for row in range(50)]  # rows 30..49 repeat earlier words
    lines = [word + " " + " ".join(number_strings(rng, 4)) for word in words]
    lines += ["junk after the header's count is never read"]
    path = write_lines(tmp_path / "v.txt", "50 4", lines)
    for limit in (None, 1, 29, 31, 50, 500):
        assert_matches_gensim(path, limit=limit)
    loaded = sources.load_word2vec(path)
    assert len(loaded) == 30 and loaded.duplicates == 20
    assert sources.load_word2vec(path, limit=35).duplicates == 5
    binary = tmp_path / "v.bin"  # the gensim route drops repeats the same way
    with open(binary, "wb") as stream:
        stream.write(b"50 4\n")
        for word, row in zip(words, fast_vectors(path)[1][[int(w[1:]) for w in words]]):
            stream.write(word.encode() + b" " + row.astype("<f4").tobytes() + b"\n")
    from_binary = sources.load_word2vec(binary)
    assert from_binary.words == loaded.words and from_binary.duplicates == 20 and from_binary.vectors.shape == (30, 4)
    assert (from_binary.vectors == loaded.vectors).all()
    for suffix, compress in ((".gz", gzip.compress), (".bz2", bz2.compress)):
        packed = tmp_path / ("v.txt" + suffix)
        packed.write_bytes(compress(path.read_bytes()))
        again = sources.load_word2vec(packed)
        assert again.words == loaded.words and (again.vectors == loaded.vectors).all()


def test_normalised_vectors_equal_gensim_normalised(tmp_path):
    rng = np.random.default_rng(4)
    lines = [f"词{row} " + " ".join(number_strings(rng, 16)) for row in range(64)]
    lines[7] = "zero " + " ".join(["0"] * 16)
    path = write_lines(tmp_path / "v.txt", "64 16", lines)
    loaded = sources.load_word2vec(path)
    words, reference = gensim_vectors(path)
    zero = sources.normalize_rows(reference)  # the very same in-place faiss normalisation
    assert loaded.words == words and loaded.zero_rows == zero == 1
    assert_same_bits(loaded.vectors, reference)


def test_unicode_errors_like_gensim(tmp_path, small_blocks):
    body = b"4 2\nok 1 2\ncaf\xe9 1 2\n\xe4\xb8 3 4\n\xe4\xb8\xad\xff\xfe 5 6\n"
    path = tmp_path / "latin1.txt"
    path.write_bytes(body)
    with pytest.raises(InputError) as problem:
        sources.load_word2vec(path)
    assert f"{path}:3:" in str(problem.value) and "UTF-8" in str(problem.value)
    for errors in ("replace", "ignore"):
        words, _ = assert_matches_gensim(path, unicode_errors=errors)
        assert sources.load_word2vec(path, unicode_errors=errors).words == words
    assert sources.load_word2vec(path, unicode_errors="replace").words == ["ok", "caf\ufffd", "\ufffd",
                                                                           "中\ufffd\ufffd"]


def test_progress_bar_only_when_asked_or_big(tmp_path, capsys):
    path = write_lines(tmp_path / "v.txt", "3 1", ["a 1", "b 2", "c 3"])
    sources.load_word2vec(path, progress=True)
    assert "read vectors" in capsys.readouterr().err
    sources.load_word2vec(path)  # small (and stderr is no terminal here): no bar
    sources.load_word2vec(path, progress=False)
    assert capsys.readouterr().err == ""


def test_one_vector_array_in_memory(tmp_path, monkeypatch):
    """The float32 array is allocated once and filled in place, also when repeated words are dropped:
    the peak stays well under two copies (gensim's ascontiguousarray or a vectors[kept] would make one).
    Measured with tracemalloc, which sees numpy's and Python's allocations (not pyarrow's per-block table)."""
    monkeypatch.setattr(sources, "TEXT_BLOCK_BYTES", 1 << 18)
    rng = np.random.default_rng(5)
    count, dim = 12000, 160
    values = rng.standard_normal((count, dim)).astype(np.float32)
    path = tmp_path / "v.txt"
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(f"{count} {dim}\n")
        for row in range(count):
            stream.write(f"w{row % 11000} " + " ".join(f"{x:.3f}" for x in values[row].tolist()) + "\n")
    array_bytes = count * dim * 4
    tracemalloc.start()
    try:
        loaded = sources.load_word2vec(path, fmt="text", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(loaded) == 11000 and loaded.duplicates == 1000
    assert loaded.vectors.flags.owndata and loaded.vectors.flags.c_contiguous
    assert peak < 1.75 * array_bytes, f"peak {peak / 2**20:.1f} MiB for a {array_bytes / 2**20:.1f} MiB array"


# --------------------------------------------------------------------------- bad files


# Cases beyond tests/test_synonym_cache.py::test_bad_text_vector_files (header, ragged, mixed, number,
# short, empty, nan), which runs the same files through the same reader.
@pytest.mark.parametrize("name, body, line, fragment", [
    ("single.txt", "3 2\na 1 2\nb 1\nc 1\n", 3, "3 fields"),  # gensim would broadcast 'b 1' over both dimensions
    ("wide.txt", "2 2\na 1 2 3\nb 1 2 3\n", 2, "3 fields"),  # every row too wide parses as a table
    ("blankfield.txt", "2 2\na 1 2\nb  2\n", 3, "a number"),
    ("exponent.txt", "2 2\na 1 2\nb 1 1e\n", 3, "a number"),
    ("blankline.txt", "3 2\na 1 2\n\nc 1 2\n", 3, "fields"),
    ("tabs.txt", "2 2\na\t1\t2\nb 1 2\n", 2, "fields"),
    ("inf.txt", "2 2\na 1 2\nb 1 1e99\n", 3, "finite"),
])
def test_bad_text_files_name_the_line(tmp_path, small_blocks, name, body, line, fragment):
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    with pytest.raises(InputError) as problem:
        sources.load_word2vec(path, fmt="text")
    message = str(problem.value)
    assert "\n" not in message and f"{path}:{line}:" in message and fragment in message, message
    if fragment != "finite":  # the slow record-by-record scan (the old route to the bad line) agrees
        assert message == str(sources.find_word2vec_problem(path, binary=False))


def test_bad_line_deep_in_a_big_file(tmp_path, small_blocks):
    rng = np.random.default_rng(6)
    lines = [f"w{row} " + " ".join(number_strings(rng, 3)) for row in range(300)]
    lines[250] = "bad 1 2 three"
    lines[280] = "late 1 2 nan"
    path = write_lines(tmp_path / "v.txt", "300 3", lines)
    with pytest.raises(InputError, match=f"{path}:252: expected a number, got 'three'"):
        sources.load_word2vec(path)
    lines[250] = "w3 1 2 inf"  # a repeat of w3: gensim keeps the first w3, so this row is dropped
    write_lines(path, "300 3", lines)
    with pytest.raises(InputError, match=f"{path}:282: expected finite numbers in the vector of 'late'"):
        sources.load_word2vec(path)


# --------------------------------------------------------------------------- random files against gensim

WORD_PIECES = [b"a", b"Z", "中".encode(), "文".encode(), b"e", b"1", b'"', b"#", b"\t", b"\r", b"\x0b", b"\x00",
               "\ufeff".encode(), b"\xff", b"\xe4\xb8", "é".encode()]
NUMBERS = ["0", "-0", "1", "-2", "0.5", "-0.125", "1e-05", "3E+02", "+7", ".5", "5.", "00012", "0.1234567890123456789",
           "1.5e-3", "123456789012345678901234", "1e40", "1e-46"]
# W2V_EXAMPLES=3000 W2V_RANDOM=1 runs a longer, freshly seeded sweep (passed: 3000 examples, 40 s).
EXAMPLES = int(os.environ.get("W2V_EXAMPLES", "150"))
ODD_NUMBERS = ["nan", "inf", "-inf", "1_0", "１", "\t1", "1\x0b", "", "x", "1e", "0x1p3", "1.2.3", "--1", "+", "."]


@st.composite
def text_files(draw):
    dim = draw(st.integers(1, 4))
    rows = draw(st.integers(1, 8))
    number = st.one_of(st.sampled_from(NUMBERS), st.floats(-1e6, 1e6, allow_nan=False).map(repr),
                       st.sampled_from(ODD_NUMBERS) if draw(st.booleans()) else st.sampled_from(NUMBERS))
    word = st.lists(st.sampled_from(WORD_PIECES), max_size=3).map(b"".join)
    lines = []
    for _ in range(rows):
        width = dim if draw(st.integers(0, 9)) else draw(st.integers(0, dim + 1))  # now and then ragged
        values = [draw(number) for _ in range(width)]
        lines.append(b" ".join([draw(word), *(value.encode() for value in values)]))
    ending = draw(st.sampled_from([b"\n", b"\r\n", b" \n", b"\t\n"]))
    count = rows + draw(st.sampled_from([0, 0, 0, -1, 1])) or 1
    body = f"{count} {dim}\n".encode() + ending.join(lines) + (ending if draw(st.booleans()) else b"")
    limit = draw(st.one_of(st.none(), st.integers(1, rows + 1)))
    return body, limit, draw(st.sampled_from(["strict", "replace", "ignore"])), draw(st.sampled_from([8, 64, 1 << 20]))


@settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("W2V_RANDOM"),
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=text_files())
def test_random_files_match_gensim(tmp_path_factory, case):
    body, limit, unicode_errors, block_bytes = case
    path = tmp_path_factory.mktemp("w2v") / "v.txt"
    path.write_bytes(body)
    reference = gensim_vectors(path, limit, unicode_errors)
    saved, sources.TEXT_BLOCK_BYTES = sources.TEXT_BLOCK_BYTES, block_bytes
    try:
        ours = fast_vectors(path, limit, unicode_errors)
    except InputError as error:
        message = str(error)
        assert "\n" not in message and str(path) in message
        # gensim fails too, or it broadcast a row holding a single number over all dimensions.
        assert reference is None or "fields" in message, message
        return
    finally:
        sources.TEXT_BLOCK_BYTES = saved
    assert reference is not None, "we read a file gensim refuses"
    assert ours[0] == reference[0]
    assert_same_bits(ours[1], reference[1])
