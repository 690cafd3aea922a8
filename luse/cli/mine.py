"""``luse mine-pairs`` (similar-sentence pairs from raw documents) and ``luse mine-negatives`` (hard negatives
for pairs, denoised by a cross-encoder). The work is in :mod:`luse.mining`."""

from __future__ import annotations

import argparse
import json
import sys

from luse.cli.args import positive_int, unit_interval


def register(subparsers) -> None:
    """Add ``luse mine-pairs`` and ``luse mine-negatives`` (light imports only: the work is imported in the handlers)."""
    _register_pairs(subparsers)
    _register_negatives(subparsers)


def _register_pairs(subparsers) -> None:
    parser = subparsers.add_parser(
        "mine-pairs", help="mine similar-sentence pairs from documents by character Jaccard (MinHash LSH)",
        description="Split texts into sentences and keep pairs whose character-level Jaccard similarity passes "
                    "a threshold: scheme 1 across different answers to the same question, scheme 2 within one "
                    "document (higher threshold), scheme 3 across the whole input (every sentence against every "
                    "other; the default when every document is one sentence, such as a log of questions one per "
                    "line). MinHash LSH blocking keeps it far from quadratic; every "
                    "candidate is verified exactly. Input: .txt (one document per line), .jsonl "
                    '({"text": ...} documents, or {"question"|"qid": ..., "answers": [...]} / {"answer": ...}), '
                    "optionally .gz, directories, globs, or peoples-daily (People's Daily 1998 paragraphs). "
                    'Output: JSON lines {"text1", "text2", "score", "scheme"}.')
    parser.add_argument("--in", dest="inputs", metavar="FILE", nargs="+", required=True,
                        help="input files, directories, globs, or peoples-daily")
    parser.add_argument("--out", metavar="FILE.jsonl", required=True, help="pairs (written atomically)")
    parser.add_argument("--answer-threshold", metavar="J", type=unit_interval, default=0.5,
                        help="minimum Jaccard for scheme 1 (answers to one question); default 0.5")
    parser.add_argument("--document-threshold", metavar="J", type=unit_interval, default=0.7,
                        help="minimum Jaccard for scheme 2 (sentences of one document); default 0.7")
    parser.add_argument("--corpus-threshold", metavar="J", type=unit_interval, default=0.7,
                        help="minimum Jaccard for scheme 3 (any two sentences of the input); default 0.7")
    parser.add_argument("--scheme", choices=("auto", "groups", "corpus"), default="auto",
                        help="groups: schemes 1 and 2 (pairs within a document, across the answers to a question); "
                             "corpus: scheme 3 (every sentence against every other); auto (default): corpus when "
                             "every document is one sentence, else groups. The report says which ran")
    parser.add_argument("--ngram", metavar="N", type=positive_int, default=1,
                        help="character n-grams compared (1: single characters); default 1")
    parser.add_argument("--num-perm", metavar="N", type=positive_int, default=128, help="MinHash size; default 128")
    parser.add_argument("--min-chars", metavar="N", type=positive_int, default=5,
                        help="shortest sentence kept (letters, digits, characters); default 5")
    parser.add_argument("--max-chars", metavar="N", type=positive_int, default=128,
                        help="longest sentence kept; default 128")
    parser.add_argument("--field", default="text", help="JSON key of a document's text; default text")
    parser.add_argument("--negatives", action="store_true",
                        help='add a random sentence of another document as "hard_negative" (keys become '
                             "sentence1/sentence2, so SimCSE supervised reads the file as triplets)")
    parser.add_argument("--summary", metavar="FILE.json", help="also write the counts per scheme as JSON")
    parser.add_argument("--seed", type=int, default=1, help="MinHash and negative sampling seed; default 1")
    parser.set_defaults(handler=run_pairs)


def run_pairs(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from luse.io import atomic_write_text
    from luse.mining.pairs import MiningResult, PairMiner, read_groups, write_pairs

    miner = PairMiner(answer_threshold=args.answer_threshold, document_threshold=args.document_threshold,
                      ngram=args.ngram, num_perm=args.num_perm, min_chars=args.min_chars, max_chars=args.max_chars,
                      negatives=args.negatives, seed=args.seed, corpus_threshold=args.corpus_threshold,
                      scheme=args.scheme)
    with tqdm(desc="mine-pairs", unit="group", disable=not sys.stderr.isatty()) as bar:
        written, dropped = write_pairs(miner.mine(read_groups(args.inputs, field=args.field), progress=bar.update),
                                       args.out)
    result = MiningResult(miner.stats, duplicates_dropped=dropped, ran=miner.ran)
    print(result.summary(), file=sys.stderr)
    print(f"wrote {written} pairs to {args.out}" + (f" ({dropped} repeated pairs dropped)" if dropped else ""),
          file=sys.stderr)
    if args.summary:
        atomic_write_text(args.summary, json.dumps({**result.to_dict(), "written": written, "out": args.out},
                                                   ensure_ascii=False, indent=2) + "\n")
    return 0


def _register_negatives(subparsers) -> None:
    parser = subparsers.add_parser(
        "mine-negatives", help="hard negatives for (anchor, positive) pairs: bi-encoder retrieval, "
                               "denoised by a cross-encoder",
        description="For each (anchor, positive) pair, retrieve candidates with the bi-encoder (faiss), keep "
                    "a rank range (the anchor and its own positives left out), score (anchor, candidate) with "
                    "the cross-encoder and keep as hard negatives only candidates scoring below --threshold "
                    "(high scores are likely unlabelled positives). Writes triplets "
                    '{"anchor", "positive", "negative"} for recipes/simcse_sup.py and reports how many '
                    "candidates the denoising removed and how many of those were known positives.")
    parser.add_argument("--in", dest="input", required=True, metavar="PAIRS",
                        help="(anchor, positive) pairs: .jsonl (anchor/positive, sentence1/sentence2, ...; optional "
                             "label) or .tsv (anchor<TAB>positive[<TAB>label]); rows with label <= 0 are skipped")
    parser.add_argument("--out", required=True, metavar="TRIPLETS.jsonl", help="triplets (written atomically)")
    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="the bi-encoder: an exported luse model, any HF encoder directory, or m3e-small")
    parser.add_argument("--cross-encoder", required=True, metavar="DIR",
                        help="any Hugging Face sequence-classification checkpoint (e.g. recipes/cross_encoder.py's "
                             "OUTPUT/final)")
    parser.add_argument("--corpus", metavar="FILE",
                        help="candidate sentences, one per line, no blank lines (default: the positives of all pairs)")
    parser.add_argument("--labels", metavar="FILE",
                        help="known positive pairs (same formats as --in): never written as negatives, and "
                             "counted in the report")
    parser.add_argument("--ranks", type=_ranks, default=(10, 100), metavar="FIRST-LAST",
                        help="rank range of retrieved candidates kept, 1-based, inclusive; default 10-100")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="cross-encoder score at or above which a candidate is dropped as a likely "
                             "positive; default 0.5 (a probability for sigmoid/softmax heads)")
    parser.add_argument("--negatives-per-pair", type=positive_int, default=1, metavar="N",
                        help="triplets per pair at most; default 1")
    parser.add_argument("--sampling", choices=("top", "random"), default="top",
                        help="top: the best-ranked kept candidates (hardest); random: drawn among the kept")
    parser.add_argument("--index", choices=("flat", "ivf", "hnsw"), default="flat", help="faiss index; default flat")
    parser.add_argument("--batch-size", type=positive_int, default=64, metavar="N", help="default: 64")
    parser.add_argument("--cross-batch-size", type=positive_int, default=32, metavar="N", help="default: 32")
    parser.add_argument("--max-length", type=positive_int, metavar="N",
                        help="cross-encoder max tokens per pair (default: the saved setting, else 128)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sampling random; default 0")
    parser.add_argument("--summary", metavar="FILE.json", help="also write the report as JSON")
    parser.set_defaults(handler=run_negatives)


def run_negatives(args: argparse.Namespace) -> int:
    from luse.errors import InputError
    from luse.io import atomic_write_text
    from luse.mining.negatives import mine_hard_negatives, read_anchor_pairs, read_corpus, write_triplets
    from luse.model.cross_encoder import load_cross_encoder
    from luse.model.export import load_model

    # Read every input before loading models: a typo in a data file should fail in a second.
    rows = read_anchor_pairs(args.input)
    pairs = [(a, p) for a, p, label in rows if label is None or label > 0]
    known = []
    if args.labels:
        known = [(a, p) for a, p, label in read_anchor_pairs(args.labels) if label is None or label > 0]
    corpus = read_corpus(args.corpus) if args.corpus else None
    if not pairs:
        raise InputError(args.input, "at least one positive pair (label > 0 or no label)", got="none")
    progress = sys.stderr.isatty()
    encoder = load_model(args.model, device=args.device)
    cross = load_cross_encoder(args.cross_encoder, max_length=args.max_length, device=args.device)
    triplets, stats = mine_hard_negatives(
        pairs, encoder, lambda todo: cross.predict(todo, batch_size=args.cross_batch_size, show_progress=progress),
        corpus=corpus, ranks=args.ranks, threshold=args.threshold, negatives_per_pair=args.negatives_per_pair,
        sampling=args.sampling, known_positives=known, index_kind=args.index, batch_size=args.batch_size,
        seed=args.seed, show_progress=progress)
    if len(rows) > len(pairs):
        stats.notes.append(f"{len(rows) - len(pairs)} rows with label <= 0 skipped")
    write_triplets(triplets, args.out)
    print(stats.summary(), file=sys.stderr)
    print(f"triplets: {args.out}", file=sys.stderr)
    if args.summary:
        atomic_write_text(args.summary, json.dumps({**stats.to_dict(), "out": args.out}, ensure_ascii=False,
                                                   indent=2) + "\n")
    return 0


def _ranks(text: str) -> tuple[int, int]:
    from luse.mining.negatives import parse_ranks

    try:
        return parse_ranks(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
