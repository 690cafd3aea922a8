"""A candidate tried for issue 15 and not adopted: corpus nearest neighbours as positives.

Each sentence of a corpus gets, as its one "paraphrase", its *mutual* nearest
neighbour under the base encoder (cosine of the vectors in ``--pooling``; mutual: each is the
other's nearest), or none. The output is the ``{"text", "views"}`` jsonl that ``views.paraphrases``
reads, so a run trains on it with no new code. The sentences are the ones the recipe trains on (its
``sentence_stream`` at the default ``data`` settings: split, filtered, de-duplicated), so every lookup hits::

    python benchmarks/neighbour_views.py CORPUS.txt OUT.jsonl --base m3e-small
    python recipes/pretrain_luse.py data.corpus=[CORPUS.txt] views.dropout=0 views.generated=1 \\
        views.paraphrases=OUT.jsonl

(a sentence without a neighbour falls back to itself: a dropout copy). What it scored on validation:
``results/domains_selection.md`` (session 11; session 17 kept the dropout copy, ``views.dropout=1``, and added the
neighbour as a second positive: also lower).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from luse.io import atomic_open  # noqa: E402


def mutual_nearest(vectors: torch.Tensor) -> torch.Tensor:
    """For unit rows, the index of each row's mutual nearest neighbour (itself excluded), or -1."""
    similarity = vectors @ vectors.T
    similarity.fill_diagonal_(float("-inf"))
    nearest = similarity.argmax(dim=1)
    mutual = nearest[nearest] == torch.arange(len(vectors))
    return torch.where(mutual, nearest, torch.full_like(nearest, -1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="a corpus file, as data.corpus reads it")
    parser.add_argument("out", type=Path, help="jsonl for views.paraphrases")
    parser.add_argument("--base", default="m3e-small")
    parser.add_argument("--pooling", default="mean", help="the pooling the base was trained with (default mean)")
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args(argv)

    from luse.config import DataConfig
    from luse.data.corpus import sentence_stream
    from luse.model.encoder import SentenceEncoder

    data = DataConfig()  # the recipe's defaults, read in corpus order
    texts = list(sentence_stream(str(args.corpus), shuffle_buffer_size=0, split=data.split_sentences,
                                 min_chars=data.min_chars, max_chars=data.max_chars, dedup=data.dedup))
    encoder = SentenceEncoder.from_pretrained(args.base, pooling=args.pooling, max_length=args.max_length)
    vectors = torch.from_numpy(encoder.encode(texts, batch_size=128, normalize=True, show_progress=True))
    partner = mutual_nearest(vectors).tolist()
    with atomic_open(args.out, "w", encoding="utf-8") as handle:
        for text, j in zip(texts, partner):
            handle.write(json.dumps({"text": text, "views": [texts[j]] if j >= 0 else []}, ensure_ascii=False) + "\n")
    print(f"{sum(j >= 0 for j in partner)} of {len(texts)} sentences have a mutual nearest neighbour -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
