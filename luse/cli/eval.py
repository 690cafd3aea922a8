"""``luse eval MODEL --sts FILE...``: Spearman x100 of a model on STS files, raw and whitened."""

from __future__ import annotations

import argparse
import json
import math
import sys

from luse.cli.args import positive_int


def register(subparsers) -> None:
    """``luse eval MODEL --sts FILE...``: Spearman x100 of a model on STS files."""
    from luse.model.encoder import POOLINGS

    parser = subparsers.add_parser(
        "eval", help="Spearman x100 of a model on STS files, with and without whitening",
        description="Score every pair of each STS file by cosine similarity and report Spearman x100, "
                    "raw and BERT-whitened (whitening fitted on each file's own sentences).")
    parser.add_argument("model", metavar="MODEL",
                        help="an exported luse model, any Hugging Face encoder directory, or m3e-small")
    parser.add_argument("--sts", metavar="FILE", nargs="+", required=True,
                        help="labelled pair files: s1<TAB>s2<TAB>score (.tsv/.txt), CSV with a header, or JSON lines")
    parser.add_argument("--pooling", metavar="P", nargs="+", choices=POOLINGS,
                        help=f"poolings to compare ({', '.join(POOLINGS)}); default: the model's own")
    parser.add_argument("--whiten-dims", metavar="K", type=positive_int, nargs="+",
                        help="also report whitening reduced to K dimensions (e.g. 256)")
    parser.add_argument("--batch-size", metavar="N", type=positive_int, default=64, help="default: 64")
    parser.add_argument("--max-length", metavar="N", type=positive_int,
                        help="truncate sentences to N tokens (default: the model's setting, else 64)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object {"FILE": {"VARIANT": spearman_x100}} instead of the table')
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from luse.data.sts import read_sts
    from luse.eval.sts import evaluate_sts, format_table
    from luse.model.export import load_model

    # Read the files before loading the model: a typo in a data file should fail in a second.
    sts_sets = [read_sts(path) for path in dict.fromkeys(args.sts)]
    encoder = load_model(args.model, pooling=args.pooling[0] if args.pooling else None,
                         max_length=args.max_length, device=args.device)
    results = evaluate_sts(encoder, sts_sets, poolings=args.pooling, whitening=(False, True),
                           whitening_dims=args.whiten_dims, batch_size=args.batch_size,
                           show_progress=sys.stderr.isatty())
    if args.json:
        # NaN is not JSON; an undefined score becomes null.
        clean = {name: {key: None if math.isnan(value) else value for key, value in row.items()}
                 for name, row in results.items()}
        print(json.dumps(clean, ensure_ascii=False))
    else:
        print(format_table(results))
    return 0
