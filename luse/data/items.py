"""The items a recipe trains on, as ``make_items(epoch) -> iterable`` for :func:`luse.train.train`.

``CorpusItems``    unlabelled sentences of ``data.corpus``, streamed (never all in memory), shuffled per epoch
``file_items``     rows of small labelled files (pairs, triplets), held in memory, reshuffled per epoch
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence

from luse.config import TrainConfig
from luse.data.skips import SkipCounter
from luse.errors import InputError

logger = logging.getLogger("luse")


class CorpusItems:
    """Unlabelled sentences of ``data.corpus``: split, filtered, de-duplicated and shuffled per epoch.

    Skipped lines are counted per epoch in ``skips``; a DataLoader worker logs its own count when it
    finishes a pass, the main process's counts are logged by :meth:`report_skips`.
    """

    def __init__(self, config: TrainConfig):
        self.data, self.seed = config.data, config.seed
        self.skips: dict[int, SkipCounter] = {}

    def __call__(self, epoch: int) -> Iterator[str]:
        from luse.data.corpus import sentence_stream

        data = self.data
        skips = self.skips[epoch] = SkipCounter()
        yield from sentence_stream(data.corpus, seed=self.seed, epoch=epoch,
                                   shuffle_buffer_size=data.shuffle_buffer, split=data.split_sentences,
                                   min_chars=data.min_chars, max_chars=data.max_chars, dedup=data.dedup,
                                   field=data.field, column=data.column, skips=skips)
        if skips.total and _worker_id() == 0:
            logger.info("data, epoch %d: %s", epoch, skips.report())

    def report_skips(self) -> None:
        """Log what the epochs read in this process skipped (with ``data.num_workers=0`` that is all of it)."""
        if self.data.num_workers:
            return  # the workers read the training epochs and logged their own counts
        for epoch, skips in sorted(self.skips.items()):
            if skips.total:
                logger.info("data, epoch %d (as far as read): %s", epoch, skips.report())


def _worker_id() -> int | None:
    """DataLoader worker id, or None in the main process."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return info.id if info is not None else None


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
