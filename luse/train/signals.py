"""Graceful stop: the first SIGINT/SIGTERM asks the loop to checkpoint and stop; a second one exits at once.

A launcher passes a signal on: Ctrl-C reaches accelerate's launcher and the training process at once, and the
launcher then sends SIGTERM to the training process (and a scheduler's SIGTERM to the process group does the
same). Such a relayed copy arrives within milliseconds of the first, so a second signal within
``RELAY_WINDOW_S`` is taken as the same request; only a later one (a user pressing Ctrl-C again) exits at once.
"""

from __future__ import annotations

import logging
import signal
import time

logger = logging.getLogger("luse")

# A run stopped by a signal (after saving its checkpoint) exits as a shell reports that signal.
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}

# Seconds after the first signal in which another one is a relayed copy, not a second request.
RELAY_WINDOW_S = 1.0


class GracefulStop:
    """Context manager: while inside, SIGINT/SIGTERM set :attr:`signal_name` instead of killing the process."""

    def __init__(self):
        self.signal_name: str | None = None
        self._first_at = 0.0
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
            if time.monotonic() - self._first_at < RELAY_WINDOW_S:
                return  # the same stop, passed on by a launcher or sent to the whole process group
            logger.error("second signal: exiting without saving")
            raise SystemExit(128 + signum)
        self.signal_name = signal.Signals(signum).name
        self._first_at = time.monotonic()
        logger.warning("%s received: saving a checkpoint after this step, then stopping "
                       "(send it again to exit at once)", self.signal_name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
