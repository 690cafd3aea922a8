"""How a recipe's run ends: logging set up before it starts, and the exit code (one error line, no traceback)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from luse.errors import InputError
from luse.train.loop import TrainResult
from luse.train.signals import EXIT_CODES
from luse.train.step import NonFiniteLossError

logger = logging.getLogger("luse")


def setup_logging() -> None:
    """luse's own messages at INFO on stderr, whatever the libraries did to the root logger."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s luse: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def exit_code(name: str, main: Callable[[list[str]], TrainResult], argv: list[str] | None = None) -> int:
    """Run a recipe's ``main(argv)`` (default: ``sys.argv[1:]``) and return the process exit code.

    0: trained to the end; 130 / 143: stopped by SIGINT / SIGTERM after saving a checkpoint; 2: bad
    input, a missing file or a failed save (one ``NAME: error: ...`` line on stderr); 1: a
    non-finite loss with ``on_nan=stop``.
    """
    setup_logging()
    try:
        result = main(sys.argv[1:] if argv is None else argv)
    except (InputError, OSError) as err:  # bad input, a missing file, a failed save (full disk)
        # Bad input and missing files are the same for every process: the first one says so.
        if os.environ.get("RANK", "0") == "0" or not isinstance(err, (InputError, FileNotFoundError)):
            print(f"{name}: error: {' '.join(str(err).split())}", file=sys.stderr)  # one line, whatever raised it
        return 2
    except NonFiniteLossError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 1
    return EXIT_CODES.get(result.interrupted, 1) if result.interrupted else 0
