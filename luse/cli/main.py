"""The ``luse`` command line: one module per command in this package, dispatched from here.

Adding a command
----------------
Write ``luse/cli/NAME.py`` with ``register(subparsers)`` and add ``"luse.cli.NAME"`` to
:data:`COMMANDS`. ``register`` adds its parser and sets ``handler``, a callable ``(args) -> int``
returning the exit code::

    def register(subparsers) -> None:
        parser = subparsers.add_parser("encode", help="...", description="...")
        parser.add_argument(...)
        parser.set_defaults(handler=run)

Registration runs on every ``luse`` call, so command modules import only light modules at the top;
torch, transformers and the library code they call belong inside the handler. Handlers log to
stderr and keep stdout for results. A handler that raises :class:`ValueError` (including
:class:`~luse.errors.InputError`) or :class:`OSError` (a missing model or file) ends the command
with exit code 2 and one ``luse: error: ...`` line on stderr, without a traceback. Shared argument
types are in :mod:`luse.cli.args`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from luse.cli.args import one_line

COMMANDS = [
    "luse.cli.train",  # train
    "luse.cli.eval",  # eval
    "luse.cli.augment",  # augment
    "luse.cli.retrieval",  # encode, search
    "luse.cli.generate",  # generate
    "luse.cli.mine",  # mine-pairs, mine-negatives
    "luse.cli.synonym_cache",  # synonym-cache
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command of :data:`COMMANDS` registered."""
    from luse import __version__

    parser = argparse.ArgumentParser(
        prog="luse", description="Pretrain and evaluate sentence encoders without labels (LUSE / SimCSE).")
    parser.add_argument("--version", action="version", version=f"luse {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).register(subparsers)
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
        print(f"luse: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("luse: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
