"""Batches of similar length: one length band per batch, so length is no cue to the positive.

In a random batch a sentence's dropout copy is the one row with exactly its length, so the contrastive loss can
find positives by length alone; in a band it cannot (what this buys on validation:
``benchmarks/results/domains_selection.md``). It also trims padding, which matters little where
:mod:`luse.model.fastpath` already computes real tokens only. Grouping reads
``group`` global batches of the (already shuffled) stream at a time, sorts them by length, cuts them into
global batches again and shuffles the order of those, so each batch holds sentences of one length band
and the bands still come in random order.

Deterministic for a given (seed, epoch), so a resumed run, which skips raw items of this same order,
sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import count, islice
from typing import Any

from luse.data.seeding import stable_rng


def item_length(item: Any) -> int:
    """Characters of a sentence, or of the longest text of a pair / triplet (what sets its padding)."""
    if isinstance(item, str):
        return len(item)
    if isinstance(item, dict):
        item = item.values()
    return max((len(x) for x in item if isinstance(x, str)), default=0)


def length_grouped(items: Iterable, batch_size: int, group: int, seed: int, epoch: int) -> Iterator:
    """``items`` reordered so that each run of ``batch_size`` items has similar lengths (``group`` batches
    sorted together; ``group <= 1`` leaves the order alone)."""
    items = iter(items)
    if group <= 1:
        yield from items
        return
    for index in count():
        chunk = list(islice(items, batch_size * group))
        full = len(chunk) // batch_size * batch_size
        # The stream is shuffled, so the leftover (an incomplete batch, dropped downstream) is a random
        # sample, not the longest sentences.
        ordered = sorted(chunk[:full], key=item_length)
        blocks = [ordered[start:start + batch_size] for start in range(0, full, batch_size)]
        stable_rng("length", seed, epoch, index).shuffle(blocks)
        for block in blocks:
            yield from block
        yield from chunk[full:]
        if len(chunk) < batch_size * group:
            return

