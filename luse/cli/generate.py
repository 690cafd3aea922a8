"""``luse generate``: similar sentences from a RoFormer-Sim model (see :mod:`luse.eval.generation`).

    luse generate MODEL "广州和深圳哪个好？" -n 100 -k 20 [--mask-idxs 6,7] [--json]
    luse generate MODEL --in sentences.txt --out paraphrases.jsonl -n 100 -k 8

One text: prints ``score<TAB>sentence`` lines, best first, or with ``--json`` one JSON list of
``{"text", "score"}``. A file (``--in``: .txt one text per line, .jsonl with a ``text`` field,
.csv/.tsv first column): writes ``{"text", "views", "scores"}`` per text, the layout ``luse augment``
writes and ``views.paraphrases`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys

from luse.cli.args import positive_int


def register(subparsers) -> None:
    """Add the ``generate`` subcommand to ``luse``'s argparse ``subparsers``."""
    parser = subparsers.add_parser(
        "generate", help="generate sentences similar to a text with a RoFormer-Sim model",
        description="Sample N continuations of a text with a RoFormer-Sim (UniLM) model, drop duplicates and "
                    "the text itself, rank by cosine similarity to the text, print the best K.")
    parser.add_argument("model", metavar="MODEL", help="a roformer_sim export or any BERT/RoFormer checkpoint "
                                                      "with an LM head")
    parser.add_argument("text", metavar="TEXT", nargs="?", help="the input sentence (or use --in)")
    parser.add_argument("-n", type=positive_int, default=100, help="candidates to sample (default 100)")
    parser.add_argument("-k", type=positive_int, default=20, help="candidates to keep (default 20)")
    parser.add_argument("--mask-idxs", type=_indices, default=None, metavar="I,J",
                        help="token positions to mask first, as in the seed: 0 is [CLS], so for a Chinese "
                             "character model I is the I-th character (6,7 masks 第一 in 科学技术是第一生产力。)")
    parser.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95; 1: off)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the K best tokens (default 0: off)")
    parser.add_argument("--temperature", type=float, default=1.0, help="default 1.0")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="candidates decoded together (default 32)")
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help="tokens per sentence (default: the model's setting, else 64)")
    parser.add_argument("--encoder", metavar="MODEL", default=None,
                        help="rank with this sentence encoder instead of the model's own [CLS] vectors")
    parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help='print a JSON list of {"text", "score"}')
    parser.add_argument("--in", dest="input", metavar="FILE", help="generate for every text of FILE")
    parser.add_argument("--out", metavar="FILE.jsonl", help="with --in: where to write the results")
    parser.add_argument("--field", default="text", help="text field of --in .jsonl records (default text)")
    parser.set_defaults(handler=run)


def _indices(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positions such as 6,7, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Handler of ``luse generate``; returns the exit code."""
    import torch

    from luse.errors import InputError
    from luse.eval.generation import gen_synonyms, generate_file, seeded_generator
    from luse.model.seq2seq import load_seq2seq

    if (args.text is None) == (args.input is None):
        raise InputError("luse generate", "either TEXT or --in FILE (one of them)")
    if args.input is not None and not args.out:
        raise InputError("luse generate", "--out FILE.jsonl with --in")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_seq2seq(args.model, max_length=args.max_length, need_lm_head=True).to(device).eval()
    encoder = None
    if args.encoder:
        from luse.model.export import load_model

        encoder = load_model(args.encoder, device=device)
    options = dict(mask_idxs=args.mask_idxs, top_p=args.top_p, top_k=args.top_k, temperature=args.temperature,
                   batch_size=args.batch_size, encoder=encoder, generator=seeded_generator(args.seed, device))
    if args.input is not None:
        count = generate_file(model, args.input, args.out, n=args.n, k=args.k, field=args.field,
                              progress=True, **options)
        print(f"luse generate: wrote {count:,} texts x up to {args.k} views to {args.out}", file=sys.stderr)
        return 0
    ranked = gen_synonyms(model, args.text, n=args.n, k=args.k, **options)
    if args.json:
        print(json.dumps([{"text": text, "score": score} for text, score in ranked], ensure_ascii=False))
    else:
        for text, score in ranked:
            print(f"{score:.4f}\t{text}")
    return 0
