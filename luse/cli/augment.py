"""``luse augment``: write the EDA views of every sentence of a corpus, as JSON lines.

Training makes its EDA views on the fly; this command makes them ahead of time, to look at
what EDA does to a corpus, to tune the rates, or to train elsewhere on fixed views::

    luse augment --in corpus.txt --out views.jsonl --views 4 --seed 0

writes one object per input text, in input order::

    {"text": "我喜欢看电影。", "views": ["我喜欢看片子。", "我爱好喜欢看电影。", "我电影看喜欢。", "我喜欢看。"]}

The output appears only when complete (written to a temporary sibling, then renamed), so an
interrupted run leaves an earlier output file as it was. The same input, seed and synonym cache
give the same file. Lines that are not UTF-8, malformed or empty are skipped and counted; an input
with no text at all left is an error (exit code 2, one line saying what was skipped), found before
the synonym cache is loaded.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

# Only light imports here: register() runs on every `luse` call. jieba, tqdm and the synonym
# cache load inside the handler.
from luse.augment.segment import LANGUAGES
from luse.cli.args import positive_int
from luse.io import atomic_open


def register(subparsers) -> None:
    """Add the ``augment`` subcommand to ``luse``'s argparse ``subparsers``."""
    parser = subparsers.add_parser(
        "augment",
        help="write EDA views (synonym replacement, insertion, swap, deletion) of a corpus as JSON lines",
        description="Write N EDA views of every text of a corpus, one JSON object per text: "
                    '{"text": ..., "views": [...]}. The output file appears only when complete.',
    )
    parser.add_argument("--in", dest="input", required=True, metavar="FILE",
                        help="corpus: a .txt/.jsonl/.csv/.tsv file (optionally .gz), a directory, a glob, "
                             "or peoples-daily")
    parser.add_argument("--out", required=True, metavar="FILE.jsonl", help="where to write the views")
    parser.add_argument("--views", type=positive_int, default=4, metavar="N",
                        help="EDA views per text (default 4, as in LUSE)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--cache", metavar="PATH", default=None,
                        help="synonym cache file; default for zh: the built-in one, built on first use")
    parser.add_argument("--language", choices=LANGUAGES, default="zh",
                        help="zh: segment with jieba; ws: split on whitespace (default zh)")
    parser.add_argument("--field", default="text",
                        help="the text field of .jsonl records (default text)")
    parser.set_defaults(handler=run_augment)


def run_augment(args: argparse.Namespace) -> int:
    """Handler of ``luse augment``; returns the exit code."""
    from tqdm import tqdm

    from luse.augment.eda import EDA
    from luse.augment.synonyms.build import load_synonym_cache
    from luse.data.corpus import iter_corpus
    from luse.data.skips import SkipCounter
    from luse.errors import InputError

    skips = SkipCounter()
    # The corpus is read up to its first text first, so a wrong --in, or one with nothing to augment,
    # fails before the cache is loaded or built.
    texts = _non_blank(iter_corpus(args.input, field=args.field, skips=skips), skips)
    first = next(texts, None)
    if first is None:
        raise InputError(args.input, "at least one text (UTF-8, not empty)", got="none", hint=skips.report())
    texts = chain([first], texts)
    cache = load_synonym_cache(args.cache, args.language, setting="--cache")
    eda = EDA(cache.synonyms, language=args.language, extra_words=cache.vocab)
    eda.segmenter.prepare()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    written = 0
    with atomic_open(Path(args.out), "w") as out, tqdm(unit=" texts", file=sys.stderr, mininterval=1.0) as bar:
        for text in texts:
            record = {"text": text, "views": eda.views(text, args.views, rng)}
            out.write(json.dumps(record, ensure_ascii=False))
            out.write("\n")
            written += 1
            bar.update()
    print(_summary(args, eda.stats, written, time.perf_counter() - started, skips.report()), file=sys.stderr)
    return 0


def _non_blank(texts: Iterator[str], skips) -> Iterator[str]:
    """``texts`` without the blank ones, which are counted as ``"empty"`` skips."""
    for text in texts:
        if not text or text.isspace():
            skips.skip("empty")
            continue
        yield text


def _summary(args: argparse.Namespace, stats, written: int, seconds: float, skipped: str) -> str:
    ops = ", ".join(f"{op} {stats[op]:,}" for op in ("sr", "ri", "rs", "rd"))
    rate = written / seconds if seconds > 0 else 0.0
    return (f"luse augment: wrote {written:,} texts x {args.views} views to {args.out} in {seconds:.1f}s "
            f"({rate:,.0f} texts/s); views by operation: {ops}; {stats['fallback']:,} fallbacks, "
            f"{stats['unchanged']:,} unchanged; {skipped}")
