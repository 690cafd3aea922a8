"""Sentence-embedding evaluation: STS Spearman (raw and whitened) and label-free geometry.

One implementation serves the trainer's periodic evaluation, ``luse eval`` and the benchmarks,
so a number printed anywhere in luse means the same thing.

STS
    Each pair is scored by the cosine similarity of its two sentence vectors, and the scores are
    compared with the gold labels by Spearman's rank correlation, reported x100 (the convention of
    the SimCSE and CoSENT tables).
Whitening
    BERT-whitening (Su et al., 2021, "Whitening Sentence Representations for Better Semantics and
    Faster Retrieval"): centre the vectors and rotate/scale them so their covariance becomes the
    identity, optionally keeping only the ``k`` leading directions. It corrects the anisotropy of
    raw BERT vectors without any training.
Alignment and uniformity
    Wang & Isola (2020), "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere": alignment is the expected distance between positive pairs
    (lower is better), uniformity the log of the mean Gaussian potential between distinct vectors
    (lower is better). They need no labels, so they track runs that have no STS file.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice

import numpy as np
import torch
from scipy.spatial.distance import pdist
from scipy.special import logsumexp
from scipy.stats import spearmanr

from luse.config import EvalConfig
from luse.data.sts import StsSet, read_sts
from luse.model.encoder import POOLINGS

logger = logging.getLogger(__name__)

WHITEN_SUFFIX = "whiten"


def spearman_x100(pred: Sequence[float], gold: Sequence[float]) -> float:
    """Spearman's rank correlation between predicted and gold scores, times 100.

    Args:
        pred: Predicted similarities, one per pair.
        gold: Gold scores (graded or 0/1), same length.

    Returns:
        A float in [-100, 100]; ``nan`` when either side is constant (the correlation is undefined).

    Raises:
        ValueError: If the lengths differ or there are fewer than two pairs.

    Example::

        >>> spearman_x100([0.1, 0.5, 0.9], [1, 2, 3])
        100.0
    """
    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if pred.shape != gold.shape or pred.ndim != 1:
        raise ValueError(f"pred and gold must be 1-d and of the same length, got {pred.shape} and {gold.shape}")
    if len(pred) < 2:
        raise ValueError(f"Spearman correlation needs at least two pairs, got {len(pred)}")
    if np.ptp(pred) == 0 or np.ptp(gold) == 0:
        return math.nan  # scipy would warn and return nan too; say it without the warning
    return float(spearmanr(pred, gold).statistic) * 100


def fit_whitening(vectors, dims: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fit a BERT-whitening transform: ``apply_whitening(x, mu, W)`` has identity covariance.

    ``mu`` is the mean vector; with ``U, S = SVD(cov)``, ``W = U / sqrt(S)``, columns sorted by
    decreasing variance, so ``W[:, :k]`` keeps the ``k`` most informative directions (the paper's
    dimensionality reduction). Directions with numerically zero variance (there are some whenever
    there are fewer vectors than dimensions) are dropped rather than blown up by ``1 / sqrt(0)``,
    so ``W`` can have fewer columns than requested.

    Args:
        vectors: ``(n, d)`` array (or tensor) of sentence vectors, ``n >= 2``.
        dims: Keep only the first ``dims`` whitened directions; ``None`` keeps all.

    Returns:
        ``(mu, W)``: float64 arrays of shapes ``(1, d)`` and ``(d, k)``.

    Raises:
        ValueError: If ``vectors`` is not 2-d with at least two rows, ``dims`` is not in
            ``[1, d]``, or the vectors have no variance at all.
    """
    x = _as_matrix(vectors)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"whitening needs at least two vectors, got {n}")
    if dims is not None and not 1 <= dims <= d:
        raise ValueError(f"whitening dims must be between 1 and the vector size {d}, got {dims}")
    mu = x.mean(axis=0, keepdims=True)
    cov = np.cov(x, rowvar=False)
    u, s, _ = np.linalg.svd(cov)
    # The same tolerance numpy.linalg.matrix_rank uses: below it an eigenvalue is rounding noise.
    keep = s > s.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    if not keep.any():
        raise ValueError("cannot whiten vectors that are all identical (zero covariance)")
    w = u[:, keep] / np.sqrt(s[keep])
    return mu, (w if dims is None else w[:, :dims])


def apply_whitening(vectors, mu: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(vectors - mu) @ W``: the whitened (and possibly reduced) vectors, as float64."""
    return (_as_matrix(vectors) - mu) @ w


def alignment(x, y, alpha: float = 2) -> float:
    """Wang & Isola alignment: mean ``||x_i - y_i|| ** alpha`` over positive pairs (lower is better).

    Rows are L2-normalised first, so the value lies in ``[0, 2 ** alpha]``: 0 when every pair is
    identical, ``2 ** (alpha / 2)`` for orthogonal pairs.

    Args:
        x: ``(n, d)`` vectors (array or tensor).
        y: ``(n, d)`` vectors; ``y[i]`` is the positive of ``x[i]``.
        alpha: Exponent on the distance (the paper uses 2).
    """
    x, y = _unit_rows(x), _unit_rows(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    return float(np.mean(np.linalg.norm(x - y, axis=1) ** alpha))


def uniformity(x, t: float = 2, *, max_points: int = 2048, seed: int = 0) -> float:
    """Wang & Isola uniformity: ``log mean exp(-t * ||x_i - x_j||^2)`` over distinct pairs (lower is better).

    Rows are L2-normalised first. The value is 0 when all vectors coincide and decreases as they
    spread over the sphere (``-4t`` for two antipodal points).

    Args:
        x: ``(n, d)`` vectors (array or tensor), ``n >= 2``.
        t: Temperature of the Gaussian potential (the paper uses 2).
        max_points: Above this many rows, a random subset of this size is used (the pair count
            grows quadratically).
        seed: Seed of that subset, so repeated evaluations compare the same points.
    """
    x = _unit_rows(x)
    if len(x) < 2:
        raise ValueError(f"uniformity needs at least two vectors, got {len(x)}")
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), size=max_points, replace=False)]
    squared = pdist(x, metric="sqeuclidean")  # the n(n-1)/2 distinct pairs
    return float(logsumexp(-t * squared) - math.log(len(squared)))


def evaluate_sts(encoder, sts_sets_or_paths: Iterable[StsSet | str | os.PathLike], *,
                 poolings: Sequence[str] | None = None, whitening: Sequence[bool] = (False, True),
                 whitening_dims: int | Sequence[int] | None = None, batch_size: int = 64,
                 show_progress: bool = False) -> dict[str, dict[str, float]]:
    """Spearman x100 of an encoder on STS files, for several poolings, with and without whitening.

    Every distinct sentence (over all files) is encoded once per pooling with
    ``encoder.encode(..., pooling=p)``; each pair is then scored by cosine similarity.

    Whitening is fitted, as in the BERT-whitening paper, on the vectors of the evaluated file
    itself (both sides of every pair), separately for each file and pooling: it uses the file's
    sentences but never its labels.

    Args:
        encoder: A :class:`~luse.model.encoder.SentenceEncoder` (anything with ``encode(texts, batch_size=,
            pooling=)`` returning an ``(n, d)`` array works).
        sts_sets_or_paths: :class:`~luse.data.sts.StsSet` objects or paths for
            :func:`~luse.data.sts.read_sts`.
        poolings: Poolings to compare (see :data:`~luse.model.encoder.POOLINGS`); default: the encoder's own.
        whitening: Which variants to report: ``False`` for raw vectors, ``True`` for whitened ones.
        whitening_dims: Also report whitening reduced to these dimensions (an int or several); only
            when ``True in whitening``.
        batch_size: Encoding batch size.
        show_progress: Show a progress bar (on stderr) while encoding.

    Returns:
        ``{set name: {variant: spearman_x100}}`` in input order, where a set's name is its path as
        given and the variants are, for each pooling ``p``: ``p`` (raw), ``p+whiten`` and
        ``p+whiten-K`` for each ``K`` in ``whitening_dims``. A variant whose score is undefined
        (constant predictions, vectors with no variance) is ``nan``.

    Raises:
        InputError: If a path is not a valid STS file.
        ValueError: On an unknown pooling, duplicate set names, or a whitening dimension larger
            than the vectors.

    Example::

        >>> evaluate_sts(encoder, ["stsb-test.tsv"], poolings=["cls", "mean"], whitening_dims=256)
        {'stsb-test.tsv': {'cls': ..., 'cls+whiten': ..., 'cls+whiten-256': ...,
                           'mean': ..., 'mean+whiten': ..., 'mean+whiten-256': ...}}   # Spearman x100
    """
    sts_sets = [item if isinstance(item, StsSet) else read_sts(item) for item in sts_sets_or_paths]
    names = [sts.name for sts in sts_sets]
    if len(set(names)) != len(names):
        raise ValueError(f"STS sets must have distinct names, got {names}")
    poolings = list(poolings) if poolings else [encoder.pooling]
    unknown = [p for p in poolings if p not in POOLINGS]
    if unknown:
        raise ValueError(f"unknown pooling {unknown[0]!r}; expected one of {', '.join(POOLINGS)}")
    variants = _whitening_variants(whitening, whitening_dims)

    sentences = list(dict.fromkeys(s for sts in sts_sets for s in sts.sentences1 + sts.sentences2))
    index = {sentence: i for i, sentence in enumerate(sentences)}
    results: dict[str, dict[str, float]] = {sts.name: {} for sts in sts_sets}
    for pooling in poolings:
        logger.info("encoding %d distinct sentences with pooling=%s", len(sentences), pooling)
        vectors = np.asarray(encoder.encode(sentences, batch_size=batch_size, pooling=pooling,
                                            show_progress=show_progress), dtype=np.float64)
        for sts in sts_sets:
            left = vectors[[index[s] for s in sts.sentences1]]
            right = vectors[[index[s] for s in sts.sentences2]]
            for suffix, dims in variants:
                key = pooling if suffix is None else f"{pooling}+{suffix}"
                results[sts.name][key] = _score(left, right, sts.scores, suffix is not None, dims, sts.name, key)
    return results


def training_evaluator(config: EvalConfig, make_items: Callable[[int], Iterable]):
    """What training evaluates every ``eval.every`` steps: Spearman x100 on the ``eval.sts`` files (their mean
    is the score that picks ``best/``), else label-free alignment/uniformity on a sample of the training
    sentences (no score); None when there is neither."""
    sts_sets = [read_sts(path) for path in config.sts]  # bad files fail now, not after training

    if sts_sets:
        def evaluate(encoder) -> dict:
            results = evaluate_sts(encoder, sts_sets, poolings=[encoder.pooling], whitening=(False,),
                                   batch_size=config.batch_size)
            scores = [row[encoder.pooling] for row in results.values()]
            metrics = {f"{name}/{key}": value for name, row in results.items() for key, value in row.items()}
            return {"score": sum(scores) / len(scores), "results": results, "metrics": metrics,
                    "table": format_table(results)}
        return evaluate

    sample = [item for item in islice(make_items(0), config.label_free_sentences) if isinstance(item, str)]
    if len(set(sample)) < 2:  # alignment/uniformity need at least two distinct sentences
        return None

    def evaluate(encoder) -> dict:
        metrics = label_free_metrics(encoder, sample)
        table = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        return {"score": None, "metrics": metrics, "table": f"label-free ({len(sample)} sentences): {table}"}

    return evaluate


def cross_encoder_evaluator(config: EvalConfig):
    """Spearman x100 between the cross-encoder's scores and the gold scores of ``eval.sts``; None without files."""
    sets = [read_sts(path) for path in config.sts]  # bad files fail before training
    if not sets:
        return None

    def evaluate(model) -> dict:  # a luse.model.cross_encoder.CrossEncoder
        results = {s.name: spearman_x100(model.predict(list(zip(s.sentences1, s.sentences2)),
                                                       batch_size=config.batch_size), s.scores)
                   for s in sets}
        table = "  ".join(f"{name}: {value:.2f}" for name, value in results.items())
        return {"score": sum(results.values()) / len(results), "results": results,
                "metrics": {f"{name}/spearman": value for name, value in results.items()},
                "table": f"cross-encoder Spearman x100  {table}"}

    return evaluate


def _whitening_variants(whitening: Sequence[bool], whitening_dims) -> list[tuple[str | None, int | None]]:
    """``(key suffix, dims)`` per reported variant: ``(None, None)`` is raw, ``("whiten", None)`` full."""
    if isinstance(whitening, bool):
        whitening = (whitening,)
    dims_list = [] if whitening_dims is None else (
        [whitening_dims] if isinstance(whitening_dims, int) else list(whitening_dims))
    for dims in dims_list:
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ValueError(f"whitening dims must be positive integers, got {dims!r}")
    variants: list[tuple[str | None, int | None]] = []
    if False in whitening:
        variants.append((None, None))
    if True in whitening:
        variants.append((WHITEN_SUFFIX, None))
        variants += [(f"{WHITEN_SUFFIX}-{dims}", dims) for dims in dict.fromkeys(dims_list)]
    if not variants:
        raise ValueError(f"whitening must contain False and/or True, got {whitening!r}")
    return variants


def _score(left: np.ndarray, right: np.ndarray, gold: Sequence[float], whiten: bool, dims: int | None,
           name: str, key: str) -> float:
    if whiten:
        if dims is not None and dims > left.shape[1]:
            raise ValueError(f"whitening dims {dims} exceed the vector size {left.shape[1]}")
        try:
            mu, w = fit_whitening(np.concatenate([left, right]), dims)
        except ValueError as err:  # a collapsed encoder must not abort a training run's evaluation
            logger.warning("%s: %s is undefined: %s", name, key, err)
            return math.nan
        left, right = apply_whitening(left, mu, w), apply_whitening(right, mu, w)
    left, right = _unit_rows(left), _unit_rows(right)
    return spearman_x100((left * right).sum(axis=1), gold)


@torch.no_grad()
def label_free_metrics(encoder, sentences: Sequence[str], *, n: int = 1000, seed: int = 0,
                       batch_size: int = 64) -> dict[str, float]:
    """Alignment and uniformity of an encoder on unlabelled sentences (for runs without STS files).

    Alignment compares two dropout views of the same sentences, the positive pairs of unsupervised
    SimCSE: the backbone runs in training mode (dropout on) under ``no_grad``, while SimCSE's
    train-only MLP stays off, so both metrics describe the vectors that get exported. Uniformity is
    measured on ordinary eval-mode vectors. Every module's train/eval mode and the global RNG are
    restored afterwards, so calling this during training changes nothing.

    Args:
        encoder: A :class:`~luse.model.encoder.SentenceEncoder`.
        sentences: Unlabelled sentences; duplicates are dropped.
        n: Use a random sample of at most this many distinct sentences.
        seed: Seed of the sample and of the dropout masks, so successive evaluations are comparable.
        batch_size: Encoding batch size.

    Returns:
        ``{"alignment": float, "uniformity": float}``, both lower-is-better.

    Raises:
        ValueError: If there are fewer than two distinct sentences.
    """
    sample = list(dict.fromkeys(sentences))
    if len(sample) < 2:
        raise ValueError(f"label-free metrics need at least two distinct sentences, got {len(sample)}")
    if len(sample) > n:
        sample = random.Random(seed).sample(sample, n)
    modes = {module: module.training for module in encoder.modules()}
    cuda = [encoder.device.index or 0] if encoder.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            encoder.eval()
            encoder.backbone.train()  # dropout on; the top module stays in eval mode, so no MLP
            view1 = _encode_batches(encoder, sample, batch_size)
            view2 = _encode_batches(encoder, sample, batch_size)
            uniform = encoder.encode(sample, batch_size=batch_size)
    finally:
        for module, training in modes.items():
            module.training = training
    return {"alignment": alignment(view1, view2), "uniformity": uniformity(uniform, seed=seed)}


def _encode_batches(encoder, texts: Sequence[str], batch_size: int) -> np.ndarray:
    """``encoder.forward`` over batches in whatever mode the encoder is in (``encode`` forces eval)."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        inputs = {k: v.to(encoder.device) for k, v in encoder.tokenize(texts[start:start + batch_size]).items()}
        chunks.append(encoder(**inputs).float().cpu().numpy())
    return np.concatenate(chunks)


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A Markdown table of :func:`evaluate_sts` results: one row per file, one column per variant.

    Scores are Spearman x100 with one decimal; a variant missing for a file shows ``-``. With two
    or more files a final ``avg`` row gives each variant's mean over the files that have it.

    Example::

        | file          | cls  | cls+whiten |
        |---------------|-----:|-----------:|
        | stsb-test.tsv |  a.a |        b.b |
        | lcqmc.tsv     |  c.c |        d.d |
        | avg           |  e.e |        f.f |
    """
    columns = list(dict.fromkeys(key for row in results.values() for key in row))
    rows = [[name] + [_cell(row.get(key)) for key in columns] for name, row in results.items()]
    if len(results) > 1:
        means = [[row[key] for row in results.values() if key in row] for key in columns]
        rows.append(["avg"] + [_cell(sum(values) / len(values)) for values in means])
    header = ["file"] + columns
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])]
        return "| " + " | ".join([first] + rest) + " |"

    rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    return "\n".join([render(header), rule] + [render(row) for row in rows])


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _as_matrix(vectors) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d (n, d) array of vectors, got shape {x.shape}")
    return x


def _unit_rows(vectors) -> np.ndarray:
    x = _as_matrix(vectors)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
