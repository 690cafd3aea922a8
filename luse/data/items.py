"""The items a recipe trains on, as ``make_items(epoch) -> iterable`` for :func:`luse.train.train`.

``CorpusItems``    unlabelled sentences of ``data.corpus``, streamed (never all in memory), shuffled per epoch
``file_items``     rows of small labelled files (pairs, triplets), held in memory, reshuffled per epoch
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence

from luse.config import TrainConfig
from luse.data.skips import EpochSkips
from luse.errors import InputError

logger = logging.getLogger("luse")


class CorpusItems:
    """Unlabelled sentences of ``data.corpus``: split, filtered, de-duplicated and shuffled per epoch.

    Skipped lines are counted per epoch in ``skips`` (:class:`~luse.data.skips.EpochSkips`): directly when
    this process reads, and from the counts DataLoader workers send along with their batches
    (:mod:`luse.data.loader`) when they do. :meth:`report_skips` logs them at the end of a run, with any
    number of workers.
    """

    def __init__(self, config: TrainConfig):
        self.data, self.seed = config.data, config.seed
        self.skips = EpochSkips()

    def __call__(self, epoch: int) -> Iterator[str]:
        from luse.data.corpus import sentence_stream

        data = self.data
        skips = self.skips.reader(epoch)  # in a worker, its copy of self.skips travels with its batches
        yield from sentence_stream(data.corpus, seed=self.seed, epoch=epoch,
                                   shuffle_buffer_size=data.shuffle_buffer, split=data.split_sentences,
                                   min_chars=data.min_chars, max_chars=data.max_chars, dedup=data.dedup,
                                   field=data.field, column=data.column, skips=skips)
        self.skips.complete.add(epoch)

    def report_skips(self) -> None:
        """Log, once and on the main process, what the data skipped (with workers: what they sent)."""
        report = self.skips.report()
        if report is not None and _process_index() == 0:
            logger.info("%s", report)


def _process_index() -> int:
    """This process's rank in a distributed run (0 when there is none)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def in_memory_items(rows: list, seed: int) -> Callable[[int], Iterator]:
    """Small supervised sets: held in memory, reshuffled each epoch from (seed, epoch)."""

    def make_items(epoch: int) -> Iterator:
        order = list(range(len(rows)))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        return (rows[i] for i in order)

    return make_items


def file_items(paths: Sequence[str], read: Callable[[str], Iterable], seed: int, *,
               expected: str) -> Callable[[int], Iterator]:
    """Every row ``read(path)`` gives for each of ``paths``, as :func:`in_memory_items`.

    Raises:
        InputError: no rows at all; ``expected`` says what a row is (``"(anchor, positive, negative) triplets"``).
    """
    rows = [row for path in paths for row in read(path)]
    if not rows:
        raise InputError(", ".join(map(str, paths)) or "data.corpus", f"at least one row of {expected}",
                         got="none" if paths else "no files")
    return in_memory_items(rows, seed)
