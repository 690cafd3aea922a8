"""Counting what the readers drop, so a 100M-line run can say what it skipped and where.

Readers never crash on a bad line of an unlabelled corpus; they skip it and tell a
:class:`SkipCounter` why.  The counter remembers the first place each reason happened, so the
one-line :meth:`SkipCounter.report` points straight at an example to inspect::

    skipped 12 of 10,000 lines: 5 invalid UTF-8 (first at a.txt:3), 7 empty

A training run reads its corpus once per epoch, possibly in DataLoader workers; :class:`EpochSkips`
keeps each epoch's counter as far as any process read it (workers send theirs through the batch
stream, :mod:`luse.data.loader`), so the main process can report at the end whatever the number of
workers.

Two units are counted apart, because one line can hold many sentences: *lines* (records read
from a file or a hub dataset) and *sentences* (the pieces :func:`~luse.data.corpus.clean_texts`
cuts documents into).  Skips of sentences are reported in their own clause.
"""

from __future__ import annotations

import logging
from collections import Counter

logger = logging.getLogger("luse")

LINES = "lines"
SENTENCES = "sentences"
_UNITS = (LINES, SENTENCES)


class SkipCounter:
    """Counts skipped lines and sentences by reason, with the first location of each reason.

    Readers call :meth:`line_seen` for every line they read (this also moves the *current
    location*), and :meth:`skip` for every line or sentence they drop.  A stage further down a
    lazy pipeline (e.g. sentence filtering) can call :meth:`skip` without a location: because
    the generators are chained, the current location is the line the sentence came from.

    Example::

        skips = SkipCounter()
        texts = list(iter_corpus("corpus/", skips=skips))
        print(skips.report())   # skipped 3 of 1,000 lines: 3 malformed JSON (first at corpus/a.jsonl:17)

    Attributes:
        seen: lines read so far (every line, kept or skipped).
        sentences: sentences examined after document splitting (0 when nothing was split).
    """

    def __init__(self) -> None:
        self.seen = 0
        self.sentences = 0
        self.location: str | None = None
        self._counts: dict[str, Counter[str]] = {unit: Counter() for unit in _UNITS}
        self._first: dict[str, dict[str, str | None]] = {unit: {} for unit in _UNITS}

    def line_seen(self, where: str, line: int) -> None:
        """Record one line read at ``where:line`` and make it the current location."""
        self.seen += 1
        self.location = f"{where}:{line}"

    def skip(self, reason: str, where: str | None = None, *, unit: str = LINES) -> None:
        """Count one skipped line (or sentence, with ``unit="sentences"``) for ``reason``.

        Args:
            reason: a short human phrase, e.g. ``"invalid UTF-8"`` or ``"missing field 'text'"``.
            where: ``FILE:LINE`` of the skipped item; defaults to the current location.
            unit: ``"lines"`` or ``"sentences"``.
        """
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r}; expected one of {', '.join(_UNITS)}")
        self._counts[unit][reason] += 1
        self._first[unit].setdefault(reason, where if where is not None else self.location)

    @property
    def total(self) -> int:
        """All skipped items, lines and sentences together."""
        return sum(sum(counts.values()) for counts in self._counts.values())

    def skipped(self, unit: str = LINES) -> int:
        """Skipped items of one unit."""
        return sum(self._counts[unit].values())

    def first(self, reason: str) -> str | None:
        """``FILE:LINE`` of the first item skipped for ``reason`` (None if unknown or never seen)."""
        for unit in _UNITS:
            if reason in self._first[unit]:
                return self._first[unit][reason]
        return None

    def as_dict(self) -> dict[str, int]:
        """Skip counts by reason (lines and sentences together), e.g. for a JSON log."""
        merged: Counter[str] = Counter()
        for counts in self._counts.values():
            merged.update(counts)
        return dict(merged)

    def merge(self, other: SkipCounter) -> SkipCounter:
        """Add ``other``'s counts into this counter (e.g. from another worker); returns ``self``.

        First locations already known here win, so merging in reading order keeps the earliest one.
        """
        self.seen += other.seen
        self.sentences += other.sentences
        for unit in _UNITS:
            self._counts[unit].update(other._counts[unit])
            for reason, where in other._first[unit].items():
                self._first[unit].setdefault(reason, where)
        return self

    def report(self) -> str:
        """One line for a log, e.g. ``skipped 12 of 10,000 lines: 5 invalid UTF-8 (first at a.txt:3), 7 empty``."""
        clauses = [self._clause(LINES, self.seen)]
        if self._counts[SENTENCES] or self.sentences:
            clauses.append(self._clause(SENTENCES, self.sentences))
        return "; ".join(clauses)

    def _clause(self, unit: str, seen: int) -> str:
        counts = self._counts[unit]
        skipped = sum(counts.values())
        # "of N" only when N is known; a counter fed by hand may have skips but no reads.
        head = f"skipped {skipped:,} of {seen:,} {unit}" if seen else f"skipped {skipped:,} {unit}"
        if not counts:
            return head
        parts = []
        for reason, count in counts.most_common():
            where = self._first[unit].get(reason)
            parts.append(f"{count:,} {reason}" + (f" (first at {where})" if where else ""))
        return f"{head}: {', '.join(parts)}"

    def __repr__(self) -> str:
        return f"SkipCounter({self.report()})"


class EpochSkips:
    """Skip counts of a corpus read once per epoch, by several readers: this process (a check before
    training, the training pass itself without workers, an evaluator's sample) and DataLoader workers.

    Every reader of an epoch reads the same stream from its start, so the counter that has seen the
    most lines holds everything the others saw: :meth:`get` gives that one. Readers in this process
    register a live counter (:meth:`reader`); workers' counters arrive by :meth:`offer`.
    """

    def __init__(self) -> None:
        self._readers: dict[int, list[SkipCounter]] = {}
        self._offered: dict[int, SkipCounter] = {}
        self.complete: set[int] = set()  # epochs some reader read to the end

    def reader(self, epoch: int) -> SkipCounter:
        """A new counter for a reader of ``epoch`` in this process."""
        counter = SkipCounter()
        self._readers.setdefault(epoch, []).append(counter)
        return counter

    def offer(self, epoch: int, counter: SkipCounter, *, read_to_end: bool = False) -> None:
        """A counter for ``epoch`` from another process: kept when it read at least as far as the one held."""
        held = self._offered.get(epoch)
        if held is None or counter.seen >= held.seen:
            self._offered[epoch] = counter
        if read_to_end:
            self.complete.add(epoch)

    def get(self, epoch: int) -> SkipCounter | None:
        """The counter of ``epoch`` that read furthest, or None if no reader started it."""
        counters = self._readers.get(epoch, []) + ([self._offered[epoch]] if epoch in self._offered else [])
        return max(counters, key=lambda c: c.seen) if counters else None

    def __contains__(self, epoch: int) -> bool:
        return epoch in self._readers or epoch in self._offered

    def __getitem__(self, epoch: int) -> SkipCounter:
        counter = self.get(epoch)
        if counter is None:
            raise KeyError(epoch)
        return counter

    def report(self) -> str | None:
        """One line on what the data skipped: the furthest-read epoch's counts (every epoch reads the same
        files, so one pass says it all), or None when nothing was skipped."""
        epochs = set(self._readers) | set(self._offered)
        if not epochs:
            return None
        epoch = max(epochs, key=lambda e: (e in self.complete, self[e].seen))
        counter = self[epoch]
        if not counter.total:
            return None
        scope = "one full pass over data.corpus" if epoch in self.complete else "as far as read"
        return f"data ({scope}): {counter.report()}"
