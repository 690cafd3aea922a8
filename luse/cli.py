"""The ``luse`` command line.

Adding a subcommand
-------------------
Each subcommand is one ``"module:function"`` entry in :data:`SUBCOMMANDS`. The function receives
argparse's ``subparsers``, adds its parser and sets ``handler``, a callable ``(args) -> int``
returning the exit code::

    def register_encode(subparsers) -> None:
        parser = subparsers.add_parser("encode", help="...", description="...")
        parser.add_argument(...)
        parser.set_defaults(handler=run_encode)

Registration runs on every ``luse`` call, so register functions must import only light modules;
torch, transformers and friends belong inside the handler. Handlers log to stderr and keep
stdout for results. A handler that raises :class:`ValueError` (including
:class:`~luse.errors.InputError`) or :class:`OSError` (a missing model or file) ends the command
with exit code 2 and one ``luse: error: ...`` line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import sys
from pathlib import Path

SUBCOMMANDS = [
    "luse.cli:register_eval",
    "augment.commands:register",
    "luse.retrieval_cli:register",
    "luse.generation_cli:register",
    "luse.mining.commands:register",
    "luse.mining.negatives:register",
]

logger = logging.getLogger("luse.cli")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand of :data:`SUBCOMMANDS` registered."""
    from luse import __version__

    parser = argparse.ArgumentParser(
        prog="luse", description="Pretrain and evaluate sentence encoders without labels (LUSE / SimCSE).")
    parser.add_argument("--version", action="version", version=f"luse {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for entry in SUBCOMMANDS:
        module, function = entry.split(":")
        getattr(importlib.import_module(module), function)(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``luse`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors; main() returns instead of exiting
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ValueError, OSError) as err:
        print(f"luse: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("luse: interrupted", file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    # Some library errors (transformers' OSError) span several lines; the contract is one line.
    return " ".join(str(err).split())


# --- luse eval ---------------------------------------------------------------------------------------

def register_eval(subparsers) -> None:
    """``luse eval MODEL --sts FILE...``: Spearman x100 of a model on STS files."""
    from luse.encoder import POOLINGS

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
    parser.add_argument("--whiten-dims", metavar="K", type=_positive_int, nargs="+",
                        help="also report whitening reduced to K dimensions (e.g. 256)")
    parser.add_argument("--batch-size", metavar="N", type=_positive_int, default=64, help="default: 64")
    parser.add_argument("--max-length", metavar="N", type=_positive_int,
                        help="truncate sentences to N tokens (default: the model's setting, else 64)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object {"FILE": {"VARIANT": spearman_x100}} instead of the table')
    parser.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from luse.data.sts import read_sts
    from luse.evaluation import evaluate_sts, format_table

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


def load_model(model: str, *, pooling: str | None = None, max_length: int | None = None,
               device: str | None = None):
    """A :class:`~luse.encoder.SentenceEncoder` for ``luse eval`` and other inference commands.

    An exported luse model (a directory with ``luse.json``) is loaded with its saved settings by
    ``luse.export.load_encoder``; any other encoder directory or hub name with
    ``SentenceEncoder.from_pretrained``. ``pooling`` and ``max_length`` override the saved settings
    when given.

    Raises:
        FileNotFoundError: If ``model`` is neither a local directory nor loadable by name.
        ValueError: If the pooling does not fit the model (``pooler`` on a model without one).
    """
    import torch

    from luse.encoder import DEFAULT_POOLING, POOLINGS, SentenceEncoder
    from luse.resources import resolve_model

    path = resolve_model(model)
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    loader = _export_loader() if (Path(path) / "luse.json").is_file() else None
    try:
        if loader is not None:
            encoder = loader(path)
        else:
            encoder = SentenceEncoder.from_pretrained(path, pooling=pooling or DEFAULT_POOLING)
    except OSError as err:
        if Path(path).exists():
            raise
        if Path(path).is_absolute() or path.startswith((".", "~")):
            raise FileNotFoundError(f"{model}: no such model directory") from err
        # Could be a hub name: keep the loader's first sentence (offline, unknown repo, ...).
        reason = _one_line(err).split(". ")[0]
        raise FileNotFoundError(f"{model}: no such model directory, nor a loadable model name ({reason})") from err
    if pooling is not None and pooling != encoder.pooling:
        if pooling == "pooler" and getattr(encoder.backbone, "pooler", None) is None:
            raise ValueError(f"pooling 'pooler' needs a backbone with a pooler layer, and {model} has none; "
                             "use --pooling cls")
        encoder.pooling = pooling
    if max_length is not None:
        encoder.max_length = max_length
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    logger.info("loaded %s (pooling=%s, max_length=%d) on %s", model, encoder.pooling, encoder.max_length, device)
    return encoder.to(device).eval()


def _export_loader():
    """``luse.export.load_encoder`` when that module is available, else None."""
    try:
        from luse.export import load_encoder
    except ImportError:
        return None
    return load_encoder


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
