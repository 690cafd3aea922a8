"""``luse mine-pairs``: similar-sentence pairs from raw documents (registered in ``luse.cli.SUBCOMMANDS``)."""

from __future__ import annotations

import argparse
import json
import sys

from luse.cli import _positive_int


def register(subparsers) -> None:
    """Add ``luse mine-pairs`` (light imports only: the work is imported in the handler)."""
    parser = subparsers.add_parser(
        "mine-pairs", help="mine similar-sentence pairs from documents by character Jaccard (MinHash LSH)",
        description="Split texts into sentences and keep pairs whose character-level Jaccard similarity passes "
                    "a threshold: scheme 1 across different answers to the same question, scheme 2 within one "
                    "document (higher threshold). MinHash LSH blocking keeps it far from quadratic; every "
                    "candidate is verified exactly. Input: .txt (one document per line), .jsonl "
                    '({"text": ...} documents, or {"question"|"qid": ..., "answers": [...]} / {"answer": ...}), '
                    "optionally .gz, directories, globs, or peoples-daily (People's Daily 1998 paragraphs). "
                    'Output: JSON lines {"text1", "text2", "score", "scheme"}.')
    parser.add_argument("--in", dest="inputs", metavar="FILE", nargs="+", required=True,
                        help="input files, directories, globs, or peoples-daily")
    parser.add_argument("--out", metavar="FILE.jsonl", required=True, help="pairs (written atomically)")
    parser.add_argument("--answer-threshold", metavar="J", type=_unit, default=0.5,
                        help="minimum Jaccard for scheme 1 (answers to one question); default 0.5")
    parser.add_argument("--document-threshold", metavar="J", type=_unit, default=0.7,
                        help="minimum Jaccard for scheme 2 (sentences of one document); default 0.7")
    parser.add_argument("--ngram", metavar="N", type=_positive_int, default=1,
                        help="character n-grams compared (1: single characters); default 1")
    parser.add_argument("--num-perm", metavar="N", type=_positive_int, default=128, help="MinHash size; default 128")
    parser.add_argument("--min-chars", metavar="N", type=_positive_int, default=5,
                        help="shortest sentence kept (letters, digits, characters); default 5")
    parser.add_argument("--max-chars", metavar="N", type=_positive_int, default=128,
                        help="longest sentence kept; default 128")
    parser.add_argument("--field", default="text", help="JSON key of a document's text; default text")
    parser.add_argument("--negatives", action="store_true",
                        help='add a random sentence of another document as "hard_negative" (keys become '
                             "sentence1/sentence2, so SimCSE supervised reads the file as triplets)")
    parser.add_argument("--summary", metavar="FILE.json", help="also write the counts per scheme as JSON")
    parser.add_argument("--seed", type=int, default=1, help="MinHash and negative sampling seed; default 1")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from luse.atomic import atomic_write_text
    from luse.mining.pairs import MiningResult, PairMiner, read_groups, write_pairs

    miner = PairMiner(answer_threshold=args.answer_threshold, document_threshold=args.document_threshold,
                      ngram=args.ngram, num_perm=args.num_perm, min_chars=args.min_chars, max_chars=args.max_chars,
                      negatives=args.negatives, seed=args.seed)
    with tqdm(desc="mine-pairs", unit="group", disable=not sys.stderr.isatty()) as bar:
        written, dropped = write_pairs(miner.mine(read_groups(args.inputs, field=args.field), progress=bar.update),
                                       args.out)
    result = MiningResult(miner.stats, duplicates_dropped=dropped)
    print(result.summary(), file=sys.stderr)
    print(f"wrote {written} pairs to {args.out}" + (f" ({dropped} repeated pairs dropped)" if dropped else ""),
          file=sys.stderr)
    if args.summary:
        atomic_write_text(args.summary, json.dumps({**result.to_dict(), "written": written, "out": args.out},
                                                   ensure_ascii=False, indent=2) + "\n")
    return 0


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value
