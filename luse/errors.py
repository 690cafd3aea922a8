"""One error type for bad input, so every reader reports problems the same way.

The message is one line: ``FILE:LINE: expected WHAT, got WHAT (HINT)``, the hint optional. Callers
catch ``InputError`` at the command line and print it without a traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (a data file, a config, an override): names the place and what was expected."""

    def __init__(self, where: str, expected: str, got: str | None = None, line: int | None = None,
                 hint: str | None = None):
        self.where, self.line, self.expected, self.got, self.hint = str(where), line, expected, got, hint
        place = f"{where}:{line}" if line is not None else str(where)
        message = f"{place}: expected {expected}"
        if got is not None:
            message += f", got {_short(got)}"
        if hint:
            message += f" ({hint})"  # what the input looks like instead, and which recipe reads that
        super().__init__(message)


def _short(value: object, limit: int = 80) -> str:
    """repr() of the offending value, cut short: one line, whatever the input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
