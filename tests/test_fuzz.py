"""Every input reader, fuzzed with hypothesis: random bytes, format-shaped junk and mutated valid files.

Each case must end in one of three ways: parsed correctly (valid files round-trip exactly), parsed
with the bad lines skipped *and counted* (the lenient corpus reader: every line read is either
yielded or counted as a skip), or one ``InputError``/``ValueError`` whose message is a single
line naming the file. Any other exception fails the test; so does a hang (each call runs under an
alarm, which is steadier than hypothesis' per-example deadline on a shared, loaded CPU).

``LUSE_FUZZ_EXAMPLES`` sets the examples per reader (default 100: the file takes well under a
minute); ``benchmarks/faults.py --fuzz N`` runs a larger sweep and reads the per-reader counts
this module writes to ``LUSE_FUZZ_REPORT`` when that is set.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import signal
import struct
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from luse.data.supervised import parse_score
from luse.errors import InputError

EXAMPLES = int(os.environ.get("LUSE_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("LUSE_FUZZ_REPORT"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
HANG_SECONDS = 30
COUNTS: dict[str, Counter] = defaultdict(Counter)

# Pieces that matter to some format: separators, quotes, brackets, numbers, keys, BOMs, NULs,
# line separators, a lone surrogate (invalid UTF-8 once encoded with surrogatepass).
TOKENS = ["\t", ",", '"', "\n", "\r\n", "\r", "{", "}", "[", "]", ":", " ", "0", "1", "3.5", "-2", "1e999", "nan",
          "inf", "null", "true", "\\u", "\\ud800", "\ud800", "句子", "中文", "a", "\x00", "\ufeff", "\u2028",
          "sentence1", "sentence2", "label", "score", "text", "anchor", "positive", "negative", '"text": ',
          '"sentence1": "a", ', '"label": 3, ', "Aa01A01=", "Ba02B03#", "Cc03C04@", "10 3", "2 4", "#", "&a ",
          "*a", "- ", "!!python/object", "max_steps", "model.", "lr: ", "1" * 400, "[" * 50]
junk_text = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)), max_size=80).map("".join)
junk_bytes = junk_text.map(lambda text: text.encode("utf-8", "surrogatepass"))
sentence = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20).filter(
    lambda s: s.strip() == s and s and "\ufeff" not in s and "\x85" not in s)


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """A valid file with a few bit flips, deleted or inserted bytes, or cut short."""

    @st.composite
    def build(draw):
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 4))):
            if not data:
                break
            at = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
            if action == "flip":
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif action == "delete":
                del data[at]
            elif action == "insert":
                data.insert(at, draw(st.integers(0, 255)))
            else:
                del data[at:]
        return bytes(data)

    return build()


def inputs(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=600), junk_bytes, mutated(valid))


@contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    def alarm(signum, frame):
        raise TimeoutError(f"reader still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def outcome(reader: str, path: Path, call, errors=(InputError,)):
    """Run ``call()``: its result, or None after checking the error is one line naming the file."""
    COUNTS[reader]["cases"] += 1
    try:
        with no_hang():
            result = call()
    except errors as error:
        message = str(error)
        assert "\n" not in message, f"{reader}: multi-line error {message!r}"
        assert path.name in message, f"{reader}: error does not name the file: {message!r}"
        COUNTS[reader]["error"] += 1
        return None
    return result


def write(tmp_path_factory, name: str, data: bytes) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    target = os.environ.get("LUSE_FUZZ_REPORT")
    if target:
        from luse.io import atomic_write_text

        atomic_write_text(target, json.dumps({k: dict(v) for k, v in COUNTS.items()}, indent=2))


# --- corpora: lenient, every line yielded or counted ------------------------------------------

CORPUS_NAMES = ["fuzz.txt", "fuzz.jsonl", "fuzz.csv", "fuzz.tsv", "fuzz.txt.gz", "fuzz.jsonl.gz", "fuzz.tsv.gz"]


def _corpus_valid(name: str, texts: list[str]) -> bytes:
    if ".jsonl" in name:
        body = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    elif ".csv" in name:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([t] for t in texts)
        body = out.getvalue()
    else:
        body = "".join(t + "\n" for t in texts)
    return body.encode("utf-8")


corpus_text = sentence.filter(lambda s: "\t" not in s and "\r" not in s and "\x00" not in s)


@st.composite
def corpus_case(draw):
    name = draw(st.sampled_from(CORPUS_NAMES))
    texts = draw(st.lists(corpus_text, max_size=8))
    valid = _corpus_valid(name, texts)
    kind = draw(st.sampled_from(["valid", "junk"]))
    data = valid if kind == "valid" else draw(inputs(st.just(valid)))
    compress = name.endswith(".gz") and (kind == "valid" or draw(st.booleans()))
    return name, texts, kind, gzip.compress(data, mtime=0) if compress else data


@FUZZ
@given(case=corpus_case(), corrupt_gzip=st.integers(0, 40))
def test_corpus_reader(tmp_path_factory, case, corrupt_gzip):
    from luse.data.corpus import iter_corpus
    from luse.data.skips import SkipCounter

    name, texts, kind, data = case
    if name.endswith(".gz") and corrupt_gzip and kind == "junk":  # a cut or damaged gzip stream
        data = data[:-corrupt_gzip] if corrupt_gzip % 2 else data[:corrupt_gzip] + b"\x00" + data[corrupt_gzip + 1:]
    path = write(tmp_path_factory, name, data)
    skips = SkipCounter()
    found = outcome("corpus " + name.split(".", 1)[1], path, lambda: list(iter_corpus(path, skips=skips)))
    assert found is not None, "the corpus reader skips bad lines; it never raises on content"
    assert all(isinstance(t, str) for t in found)
    if kind == "valid":
        assert found == texts and skips.total == 0
        COUNTS["corpus " + name.split(".", 1)[1]]["parsed"] += 1
    elif skips.first("corrupt gzip (rest of file skipped)") is None:
        # Every line read was either yielded or counted as a skip.
        assert len(found) + skips.skipped() == skips.seen, skips.report()
        COUNTS["corpus " + name.split(".", 1)[1]]["skipped" if skips.total else "parsed"] += 1
    else:
        COUNTS["corpus " + name.split(".", 1)[1]]["skipped"] += 1


# --- STS files: strict, all pairs or one error ------------------------------------------------

score = st.one_of(st.integers(0, 5), st.floats(0, 5, allow_nan=False).map(lambda x: round(x, 3)))
sts_sentence = sentence.filter(lambda s: not any(c in s for c in '\t,"\r\n\x00') and s.lower() not in
                               ("sentence1", "sentence2", "label", "score", "text_a", "text_b", "s1", "s2"))


@st.composite
def sts_case(draw):
    suffix = draw(st.sampled_from([".tsv", ".csv", ".jsonl", ".txt", ".dat"]))
    pairs = draw(st.lists(st.tuples(sts_sentence, sts_sentence, score), min_size=1, max_size=6))
    if suffix == ".jsonl":
        body = "".join(json.dumps({"sentence1": a, "sentence2": b, "label": s}, ensure_ascii=False) + "\n"
                       for a, b, s in pairs)
    else:
        sep = "," if suffix == ".csv" else "\t"
        body = "".join(f"{a}{sep}{b}{sep}{s}\n" for a, b, s in pairs)
    valid = body.encode("utf-8")
    kind = draw(st.sampled_from(["valid", "junk"]))
    return suffix, pairs, kind, valid if kind == "valid" else draw(inputs(st.just(valid)))


@FUZZ
@given(case=sts_case())
def test_sts_reader(tmp_path_factory, case):
    from luse.data.sts import read_sts

    suffix, pairs, kind, data = case
    path = write(tmp_path_factory, "fuzz-sts" + suffix, data)
    found = outcome("sts " + suffix, path, lambda: read_sts(path))
    if kind == "valid" and suffix != ".dat":  # .dat is sniffed: a comma in a sentence may change the guess
        assert found is not None
        assert list(zip(found.sentences1, found.sentences2, found.scores)) == [(a, b, float(s)) for a, b, s in pairs]
    if found is not None:
        assert len(found) >= 1 and all(isinstance(s, float) for s in found.scores)
        COUNTS["sts " + suffix]["parsed"] += 1


# --- supervised triplets and pairs: strict streams ---------------------------------------------

@st.composite
def supervised_case(draw):
    what = draw(st.sampled_from(["triplets", "pairs"]))
    suffix = draw(st.sampled_from([".jsonl", ".tsv", ".csv", ".jsonl.gz"]))
    text = sts_sentence
    # A number is never a hard negative: a tabular line s1, s2, 5 is a scored pair, which the triplet reader
    # refuses by design (it names the recipe that reads scored pairs).
    negative = text.filter(lambda t: parse_score(t) is None)
    rows = draw(st.lists(st.tuples(text, text, negative if what == "triplets" else score), max_size=6))
    keys = ("anchor", "positive", "negative") if what == "triplets" else ("sentence1", "sentence2", "score")
    if suffix.startswith(".jsonl"):
        body = "".join(json.dumps(dict(zip(keys, row)), ensure_ascii=False) + "\n" for row in rows)
    elif suffix == ".csv":
        body = ",".join(keys) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows)
    else:
        body = "".join("\t".join(map(str, row)) + "\n" for row in rows)
    valid = body.encode("utf-8")
    kind = draw(st.sampled_from(["valid", "junk"]))
    data = valid if kind == "valid" else draw(inputs(st.just(valid)))
    if suffix.endswith(".gz"):
        data = gzip.compress(data, mtime=0) if kind == "valid" or draw(st.booleans()) else data
    return what, suffix, rows, kind, data


@FUZZ
@given(case=supervised_case())
def test_supervised_readers(tmp_path_factory, case):
    from luse.data.supervised import read_pairs, read_triplets

    what, suffix, rows, kind, data = case
    path = write(tmp_path_factory, f"fuzz-{what}{suffix}", data)
    reader = read_triplets if what == "triplets" else read_pairs
    found = outcome(f"{what} {suffix}", path, lambda: list(reader(path)))
    if kind == "valid":
        expected = [row if what == "triplets" else (row[0], row[1], float(row[2])) for row in rows]
        assert found == expected
    if found is not None:
        COUNTS[f"{what} {suffix}"]["parsed"] += 1


# --- word vectors, thesaurus ------------------------------------------------------------------

@st.composite
def vectors_case(draw):
    binary = draw(st.booleans())
    words = draw(st.lists(st.sampled_from(list("天地人和中国大小山水")).flatmap(
        lambda c: st.just(c)), min_size=1, max_size=6, unique=True))
    dim = draw(st.integers(1, 4))
    values = draw(st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=len(words) * dim,
                           max_size=len(words) * dim))
    header = f"{len(words)} {dim}\n".encode()
    if binary:
        body = b"".join(w.encode() + b" " + struct.pack(f"<{dim}f", *values[i * dim:(i + 1) * dim]) + b"\n"
                        for i, w in enumerate(words))
    else:
        body = "".join(w + " " + " ".join(repr(v) for v in values[i * dim:(i + 1) * dim]) + "\n"
                       for i, w in enumerate(words)).encode()
    kind = draw(st.sampled_from(["valid", "junk"]))
    data = header + body if kind == "valid" else draw(inputs(st.just(header + body)))
    return binary, words, kind, data


@FUZZ
@given(case=vectors_case())
def test_word_vector_reader(tmp_path_factory, case):
    from luse.augment.synonyms.sources import load_word2vec

    binary, words, kind, data = case
    path = write(tmp_path_factory, "fuzz-vectors.bin" if binary else "fuzz-vectors.txt", data)
    name = "word2vec " + ("binary" if binary else "text")
    found = outcome(name, path, lambda: load_word2vec(path, fmt="binary" if binary else "text"))
    if kind == "valid":
        assert found is not None and found.words == words
    if found is not None:
        assert found.vectors.shape == (len(found.words), found.dim) and np.isfinite(found.vectors).all()
        COUNTS[name]["parsed"] += 1


@st.composite
def cilin_case(draw):
    codes = st.builds(lambda a, b, n, c, m, k: f"{a}{b}{n:02d}{c}{m:02d}{k}", st.sampled_from("ABCDE"),
                      st.sampled_from("abcde"), st.integers(0, 99), st.sampled_from("ABC"), st.integers(0, 99),
                      st.sampled_from("=#@"))
    lines = draw(st.lists(st.tuples(codes, st.lists(st.sampled_from(["人", "士", "人物", "天", "地"]), min_size=1,
                                                              max_size=4)), min_size=1, max_size=6))
    valid = "".join(f"{code} {' '.join(words)}\n" for code, words in lines).encode()
    kind = draw(st.sampled_from(["valid", "junk"]))
    return lines, kind, valid if kind == "valid" else draw(inputs(st.just(valid))), draw(st.booleans())


@FUZZ
@given(case=cilin_case())
def test_thesaurus_reader(tmp_path_factory, case):
    from luse.augment.synonyms.sources import load_cilin

    lines, kind, data, strict = case
    path = write(tmp_path_factory, "fuzz-cilin.txt", data)
    found = outcome("thesaurus", path, lambda: load_cilin(path, strict=strict))
    if kind == "valid":
        groups = [tuple(dict.fromkeys(words)) for code, words in lines if code.endswith("=")]
        groups = [g for g in groups if len(g) > 1]
        assert (found.groups if found is not None else []) == groups
    if found is not None:
        COUNTS["thesaurus"]["skipped" if found.skipped else "parsed"] += 1


# --- the synonym cache file -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache_bytes(tmp_path_factory) -> bytes:
    from luse.augment.synonyms.store import write_cache

    words = ["天气", "天色", "公园", "花园", "咖啡", "茶水"]
    ids = np.array([[1, 2], [0, -1], [3, -1], [2, 0], [5, -1], [4, 1]], dtype=np.int32)
    path = write_cache(tmp_path_factory.mktemp("cache") / "good.lsc", words, ids,
                       np.full(ids.shape, 0.5, dtype=np.float32), identity={"fuzz": 1})
    return path.read_bytes()


@FUZZ
@given(data=st.data())
def test_synonym_cache_file(tmp_path_factory, cache_bytes, data):
    from luse.augment.synonyms.store import SynonymCache

    blob = data.draw(st.one_of(st.binary(max_size=300), mutated(st.just(cache_bytes)),
                               st.integers(0, len(cache_bytes)).map(lambda n: cache_bytes[:n])))
    path = write(tmp_path_factory, "fuzz-cache.lsc", blob)

    def load_and_use(verify):
        # Without verify the structure is checked at load and damaged bytes surface on lookup: both
        # must be a CacheFormatError naming the file, never a decode or index error mid-training.
        with SynonymCache.load(path, verify=verify) as cache:
            return [(word, cache.neighbours(word), cache.synonyms(word)) for word in [*cache.vocab, "天气", "无"]]

    for verify in (True, False):
        found = outcome(f"synonym cache (verify={verify})", path, lambda verify=verify: load_and_use(verify))
        if blob == cache_bytes:
            assert found is not None and found[0] == ("天气", [("天色", 0.5), ("公园", 0.5)], ["天色", "公园"])
        if found is not None:
            COUNTS[f"synonym cache (verify={verify})"]["parsed"] += 1


# --- YAML configs and key=value overrides -----------------------------------------------------

config_values = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                          st.text(max_size=8), st.lists(st.text(max_size=4), max_size=3))
config_keys = st.sampled_from(["max_steps", "lr", "batch_size", "model.name_or_path", "model.pooling", "data.corpus",
                               "eval.sts", "loss.temperature", "on_nan", "views.dropout", "resume", "mixed_precision",
                               "max_step", "model", "data.num_workers", "model.max_length", "seed"])


@st.composite
def config_case(draw):
    mapping = draw(st.dictionaries(config_keys, config_values, max_size=5))
    nested: dict = {}
    for key, value in mapping.items():
        *parents, leaf = key.split(".")
        target = nested
        for part in parents:
            target = target.setdefault(part, {}) if isinstance(target.get(part, {}), dict) else {}
        target[leaf] = value
    valid = yaml.safe_dump(nested, allow_unicode=True).encode()
    text = draw(st.one_of(st.just(valid), inputs(st.just(valid))))
    overrides = draw(st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", config_keys, junk_text),
                                        junk_text), max_size=3))
    return text, overrides


@FUZZ
@given(case=config_case())
@example(case=(b"model: &m\n  x: *m\n", []))  # a mapping that contains itself (found by hand, not by hypothesis)
@example(case=(b"lr: [" * 400, ["max_steps=" + "[" * 400]))
def test_config_reader(tmp_path_factory, case):
    from luse.config import TrainConfig, load_config

    text, overrides = case
    path = write(tmp_path_factory, "fuzz-config.yaml", text)
    COUNTS["config + overrides"]["cases"] += 1
    try:
        with no_hang():
            found = load_config(path, overrides)
    except InputError as error:
        message = str(error)
        assert "\n" not in message, message
        # The file, the command line (an override), or the config as a whole (a check across keys).
        assert message.startswith((str(path), "command line")), message
        COUNTS["config + overrides"]["error"] += 1
        return
    assert isinstance(found, TrainConfig)
    COUNTS["config + overrides"]["parsed"] += 1


def test_cache_header_that_lost_a_checksum_key(tmp_path, cache_bytes):
    """The hypothesis sweep's find: one bit flip turns the key "crc32" into "brc32" (verify raised KeyError)."""
    from luse.augment.synonyms.store import CacheFormatError, SynonymCache

    damaged = cache_bytes.replace(b'"crc32"', b'"brc32"', 1)
    assert damaged != cache_bytes and len(damaged) == len(cache_bytes)
    path = tmp_path / "lost-key.lsc"
    path.write_bytes(damaged)
    with pytest.raises(CacheFormatError, match="lost-key.lsc: expected section .* matching its checksum"):
        SynonymCache.load(path, verify=True)
