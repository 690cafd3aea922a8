"""Hard negatives mined with a bi-encoder and denoised by a cross-encoder (``luse mine-negatives``).

The recipe of ../shared/seeds/004: for each (anchor, positive) pair,

1. **retrieve** candidates for the anchor with the current bi-encoder through faiss
   (:mod:`luse.eval.retrieval`) and keep a rank range, e.g. ranks 10-100: the very nearest are often
   near-duplicates of the anchor;
2. drop the anchor itself and its own positive(s) (by text) before ranking, so rank 1 is the most
   similar *other* sentence;
3. **score** every (anchor, candidate) pair with a cross-encoder (:mod:`luse.model.cross_encoder`) and keep
   as hard negatives only candidates that score **below** ``threshold``: high scores are likely
   unlabelled positives, which would teach the model the opposite of the truth;
4. write triplets ``{"anchor", "positive", "negative"}`` (JSON lines, atomically) that
   ``recipes/simcse_sup.py`` reads (:func:`luse.data.supervised.read_triplets`).

Known positives (every pair of the input, plus a ``labels`` file) are never written as negatives,
whatever the cross-encoder says; they are what the report measures the denoising against: how many
candidates the cross-encoder removed, and how many of those were known positives (and how many known
positives it missed).

Input pairs: ``.jsonl`` objects with ``anchor``/``positive`` (or ``sentence1``/``sentence2``,
``text1``/``text2``, ``query``/``pos``, ``sent0``/``sent1``) and an optional ``label``/``score``;
``.tsv`` with 2 columns (anchor, positive) or 3 (a label last). Rows whose label is not above 0 are
not positive pairs: they give no triplet and are not known positives.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from luse.errors import InputError

logger = logging.getLogger("luse.mining")

Scorer = Callable[[list[tuple[str, str]]], np.ndarray]

#: Key pairs accepted for (anchor, positive) in JSON lines, in order of preference.
PAIR_KEYS = (("anchor", "positive"), ("sentence1", "sentence2"), ("text1", "text2"), ("query", "pos"),
             ("sent0", "sent1"), ("text_a", "text_b"), ("s1", "s2"))
LABEL_KEYS = ("label", "score")


@dataclass
class MiningStats:
    """What the denoising did; ``known_*`` count against the known positives (labels)."""

    pairs: int = 0  # positive pairs read
    anchors: int = 0  # distinct anchors
    candidates: int = 0  # (anchor, candidate) pairs in the rank range, scored by the cross-encoder
    removed: int = 0  # candidates scoring >= threshold
    kept: int = 0  # candidates below the threshold and not known positives: usable negatives
    triplets: int = 0  # triplets written
    pairs_without_negative: int = 0  # positive pairs that got no negative
    known_positive_candidates: int = 0  # candidates that are known positives of their anchor
    removed_known_positives: int = 0  # ... that the cross-encoder removed
    missed_known_positives: int = 0  # ... that it scored below the threshold (never written anyway)
    threshold: float = 0.5
    ranks: tuple[int, int] = (10, 100)
    labelled: bool = False  # whether known positives beyond the input pairs were given
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.pairs} positive pairs, {self.anchors} anchors; ranks {self.ranks[0]}-{self.ranks[1]}: "
                 f"{self.candidates} candidates scored by the cross-encoder",
                 f"denoising (score >= {self.threshold:g}) removed {self.removed} candidates "
                 f"({_share(self.removed, self.candidates)}), of which {self.removed_known_positives} were known "
                 f"positives ({_share(self.removed_known_positives, self.removed)}); {self.kept} kept as negatives",
                 f"known positives among the candidates: {self.known_positive_candidates}, of which the "
                 f"cross-encoder missed {self.missed_known_positives} (never written as negatives anyway)",
                 f"wrote {self.triplets} triplets; {self.pairs_without_negative} pairs got no negative"]
        return "\n".join(lines + self.notes)

    def to_dict(self) -> dict:
        return asdict(self)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def parse_ranks(text: str) -> tuple[int, int]:
    """``"10-100"`` -> ``(10, 100)``: 1-based, both ends included; ``"5"`` means ``1-5``."""
    low, sep, high = text.partition("-")
    try:
        first, last = (int(low), int(high)) if sep else (1, int(low))
    except ValueError:
        first, last = 0, 0
    if not 1 <= first <= last:
        raise ValueError(f"expected a rank range like 10-100 (1 <= first <= last), got {text!r}")
    return first, last


# --- input ----------------------------------------------------------------------------------------

def read_anchor_pairs(path: str | PathLike) -> list[tuple[str, str, float | None]]:
    """``(anchor, positive, label or None)`` rows of a ``.jsonl``/``.json`` or ``.tsv`` file (``.gz`` too).

    Raises:
        InputError: an unknown extension, a missing file, invalid UTF-8 or a malformed line
            (naming the file, the line and the accepted forms).
    """
    from luse.data.corpus import iter_text_lines
    from luse.data.supervised import parse_score

    path = Path(path)
    suffix = Path(path.name.lower().removesuffix(".gz")).suffix
    if suffix not in (".jsonl", ".json", ".tsv"):
        raise InputError(path, "a .jsonl, .json or .tsv file of (anchor, positive) pairs", got=path.name)
    if not path.is_file():
        raise InputError(path, "an existing file", got="no such file")
    keys = " or ".join("/".join(k) for k in PAIR_KEYS)
    expected = (f"a JSON object with string fields {keys} (optional numeric label)" if suffix != ".tsv"
                else "anchor<TAB>positive[<TAB>label] with non-empty texts")
    rows = []
    for number, line in iter_text_lines(path):
        if not line.strip():
            continue
        row = _json_pair(line, parse_score) if suffix != ".tsv" else _tsv_pair(line, parse_score)
        if row is None:
            raise InputError(path, expected, got=line, line=number)
        rows.append(row)
    return rows


def _json_pair(line: str, parse_score):
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    for first, second in PAIR_KEYS:
        if first in record and second in record:
            anchor, positive = record[first], record[second]
            label_key = next((k for k in LABEL_KEYS if k in record), None)
            label = parse_score(record[label_key]) if label_key else None
            if not (_text(anchor) and _text(positive)) or (label_key and label is None):
                return None
            return anchor, positive, label
    return None


def _tsv_pair(line: str, parse_score):
    fields = line.split("\t")
    if len(fields) not in (2, 3) or not (_text(fields[0]) and _text(fields[1])):
        return None
    if len(fields) == 2:
        return fields[0], fields[1], None
    label = parse_score(fields[2])
    return (fields[0], fields[1], label) if label is not None else None


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def read_corpus(path: str | PathLike) -> list[str]:
    """Candidate sentences, one per line (a blank line is an error naming it, as in ``luse encode``)."""
    from luse.eval.retrieval import iter_sentences

    return [text for _, text in iter_sentences(path)]


# --- mining ---------------------------------------------------------------------------------------

def _key(text: str) -> str:
    return text.strip()


def mine_hard_negatives(pairs: Sequence[tuple[str, str]], encoder, scorer: Scorer, *,
                        corpus: Sequence[str] | None = None, ranks: tuple[int, int] = (10, 100),
                        threshold: float = 0.5, negatives_per_pair: int = 1, sampling: str = "top",
                        known_positives: Iterable[tuple[str, str]] = (), index_kind: str = "flat",
                        batch_size: int = 64, seed: int = 0,
                        show_progress: bool = False) -> tuple[list[dict], MiningStats]:
    """Mine denoised hard negatives for positive ``pairs``; returns ``(triplets, stats)``.

    Args:
        pairs: ``(anchor, positive)`` positive pairs.
        encoder: the bi-encoder (a :class:`~luse.model.encoder.SentenceEncoder`, or anything with its
            ``encode(texts, batch_size=, normalize=, show_progress=)``).
        scorer: scores a list of ``(anchor, candidate)`` pairs, higher = more similar; usually
            ``CrossEncoder.predict``.
        corpus: candidate sentences; default: the positives of all pairs (deduplicated).
        ranks: ``(first, last)``, 1-based and inclusive, among the retrieved sentences once the
            anchor itself and its own positives are left out.
        threshold: candidates scoring ``>= threshold`` are removed as likely positives.
        negatives_per_pair: triplets per pair at most (one per negative).
        sampling: ``top`` takes the best-ranked kept candidates (the hardest), ``random`` draws them
            among all kept candidates (seeded by ``seed``).
        known_positives: extra ``(a, b)`` pairs known to be positive (either order); together with
            ``pairs`` they are never written as negatives and are what the stats count against.
        index_kind: ``flat`` (exact), ``ivf`` or ``hnsw`` (:func:`luse.eval.retrieval.build_index`).
        batch_size: encoder batch size.
        show_progress: progress bars on stderr.
    """
    from luse.eval.retrieval import build_index, encode_texts, search

    first, last = ranks
    if not 1 <= first <= last:
        raise ValueError(f"ranks must satisfy 1 <= first <= last, got {ranks}")
    if negatives_per_pair < 1 or sampling not in ("top", "random"):
        raise ValueError("negatives_per_pair >= 1 and sampling in (top, random) expected")
    pairs = [(a, p) for a, p in pairs]
    extra_known = [(a, b) for a, b in known_positives]
    stats = MiningStats(pairs=len(pairs), threshold=threshold, ranks=(first, last), labelled=bool(extra_known))
    if not pairs:
        return [], stats
    positives_of: dict[str, set[str]] = {}
    for a, b in pairs:
        positives_of.setdefault(_key(a), set()).add(_key(b))
    known: dict[str, set[str]] = {}
    for a, b in pairs + extra_known:
        known.setdefault(_key(a), set()).add(_key(b))
        known.setdefault(_key(b), set()).add(_key(a))

    texts = list(dict.fromkeys(corpus if corpus is not None else (p for _, p in pairs)))
    if not texts:
        raise ValueError("the candidate corpus is empty")
    anchors = list(dict.fromkeys(a for a, _ in pairs))
    stats.anchors = len(anchors)
    vectors = encode_texts(encoder, texts, batch_size=batch_size, show_progress=show_progress)
    index = build_index(vectors, index_kind)
    queries = encode_texts(encoder, anchors, batch_size=batch_size, show_progress=show_progress)
    # Enough neighbours that `last` remain after leaving out the anchor and its own positives.
    excluded = 1 + max(len(v) for v in positives_of.values())
    _, ids = search(index, queries, k=min(last + excluded, len(texts)))

    candidates: dict[str, list[str]] = {}
    for anchor, row in zip(anchors, ids):
        own = positives_of[_key(anchor)] | {_key(anchor)}
        ranked = [texts[i] for i in row if i >= 0 and _key(texts[i]) not in own]
        candidates[anchor] = ranked[first - 1:last]
    if sum(len(c) < last - first + 1 for c in candidates.values()):
        stats.notes.append(f"note: {sum(len(c) < last - first + 1 for c in candidates.values())} anchors had "
                           f"fewer than {last - first + 1} candidates in ranks {first}-{last} (small corpus)")

    to_score = [(anchor, c) for anchor in anchors for c in candidates[anchor]]
    scores = np.asarray(scorer(to_score), dtype=np.float64) if to_score else np.zeros(0)
    if scores.shape != (len(to_score),):
        raise ValueError(f"the scorer returned {scores.shape} scores for {len(to_score)} pairs")
    kept: dict[str, list[str]] = {a: [] for a in anchors}
    for (anchor, candidate), score in zip(to_score, scores):
        is_known = _key(candidate) in known.get(_key(anchor), ())
        removed = bool(score >= threshold)
        stats.candidates += 1
        stats.removed += removed
        stats.known_positive_candidates += is_known
        stats.removed_known_positives += removed and is_known
        stats.missed_known_positives += (not removed) and is_known
        if not removed and not is_known:
            kept[anchor].append(candidate)
    stats.kept = sum(len(v) for v in kept.values())

    rng = random.Random(seed)
    triplets = []
    for anchor, positive in pairs:
        pool = kept[anchor]
        chosen = pool[:negatives_per_pair] if sampling == "top" else rng.sample(pool, min(negatives_per_pair, len(pool)))
        stats.pairs_without_negative += not chosen
        triplets.extend({"anchor": anchor, "positive": positive, "negative": n} for n in chosen)
    stats.triplets = len(triplets)
    return triplets, stats


def write_triplets(triplets: Iterable[dict], out: str | PathLike) -> Path:
    """JSON lines ``{"anchor", "positive", "negative"}``, written atomically."""
    from luse.io import atomic_open

    with atomic_open(out, "w", encoding="utf-8") as handle:
        for row in triplets:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return Path(out)
