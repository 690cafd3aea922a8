"""Graceful stop: the first SIGINT/SIGTERM asks the loop to checkpoint and stop; a second one exits at once."""

from __future__ import annotations

import logging
import signal

logger = logging.getLogger("luse")

# A run stopped by a signal (after saving its checkpoint) exits as a shell reports that signal.
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class GracefulStop:
    """Context manager: while inside, SIGINT/SIGTERM set :attr:`signal_name` instead of killing the process."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            logger.error("second signal: exiting without saving")
            raise SystemExit(128 + signum)
        self.signal_name = signal.Signals(signum).name
        logger.warning("%s received: saving a checkpoint after this step, then stopping "
                       "(send it again to exit at once)", self.signal_name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
