"""Deterministic, resumable batches for one process, built in DataLoader workers.

The raw item stream (sentences, pairs, triplets) is cut into *global* batches of
``batch_size * world_size`` items; process ``rank`` keeps its slice, so the global batch is the
same whether it runs on one process or on many. Each DataLoader worker reads the (cheap) raw
stream in full but builds (augments and tokenises, the expensive part) only the batches whose
index falls to it; PyTorch hands the workers' batches back round-robin, so the order is the same
for any number of workers. Resuming skips consumed batches at the raw-item level, before any
augmentation or tokenisation, and every batch draws its randomness from (seed, epoch, batch
index), so a resumed run sees exactly the batches the uninterrupted run would have seen.

What a worker's reader skipped would stay in the worker: when ``make_items`` keeps its counts in
``make_items.skips`` (an :class:`~luse.data.skips.EpochSkips`, as :class:`luse.data.items.CorpusItems`
does), each batch a worker builds carries the worker's counter so far, and a worker that reads its
stream to the end sends a last item with its final counter; the loader of :func:`make_loader` takes
them off in the main process and offers them to ``make_items.skips``, so the run can report skipped
lines at the end with any number of workers.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from luse.data.length_groups import length_grouped
from luse.data.seeding import stable_rng
from luse.data.skips import EpochSkips

_SKIPS = "_luse_skips"  # a worker's SkipCounter riding along with a batch
_READ_TO_END = "_luse_read_to_end"  # the item a worker sends after its stream ended: only its counter


def batch_rng(seed: int, epoch: int, index: int, rank: int) -> random.Random:
    """A random generator private to one batch (independent of worker count and of Python's hash salt)."""
    return stable_rng(seed, epoch, index, rank)


class BatchStream(IterableDataset):
    """Yields ``collate(local_items, rng)`` for each global batch of one epoch.

    ``make_items(epoch)`` must return the same sequence every time it is called with the same
    epoch (seeded shuffling). Incomplete trailing batches are dropped so every process takes
    the same number of steps. ``length_groups > 1`` sorts that many global batches at a time by length
    (:mod:`luse.data.length_groups`).
    """

    def __init__(self, make_items: Callable[[int], Iterable], collate: Callable[[list, random.Random], dict],
                 *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0,
                 skip_batches: int = 0, length_groups: int = 0):
        self.make_items, self.collate = make_items, collate
        self.length_groups = length_groups
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.epoch, self.skip_batches = seed, epoch, skip_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        skips = getattr(self.make_items, "skips", None) if info is not None else None
        if not isinstance(skips, EpochSkips):
            yield from self._batches(info)
            return
        for batch in self._batches(info):
            batch[_SKIPS] = skips.get(self.epoch)
            yield batch
        if self.epoch in skips:  # read to the end: the whole pass's counts
            yield {_SKIPS: skips[self.epoch], _READ_TO_END: True}

    def _batches(self, info) -> Iterator[dict[str, Any]]:
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        global_size = self.batch_size * self.world_size
        items = length_grouped(self.make_items(self.epoch), global_size, self.length_groups, self.seed, self.epoch)
        index = 0
        while True:
            # Worker w builds batches skip, skip + w, ...: the order PyTorch collects them in.
            if index < self.skip_batches or (index - self.skip_batches) % workers != worker:
                # Not ours: consume the raw items without building anything.
                if sum(1 for _ in islice(items, global_size)) < global_size:
                    return
                index += 1
                continue
            chunk = list(islice(items, global_size))
            if len(chunk) < global_size:
                return
            local = chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            batch = self.collate(local, batch_rng(self.seed, self.epoch, index, self.rank))
            batch["batch_index"] = index
            yield batch
            index += 1


class Loader:
    """Iterates a DataLoader over a :class:`BatchStream` and yields its batches, taking off the skip counts
    workers send along (offered to ``make_items.skips``; a worker's last item carries only those)."""

    def __init__(self, stream: BatchStream, loader: DataLoader):
        self.stream, self.loader = stream, loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skips = getattr(self.stream.make_items, "skips", None)
        for batch in self.loader:
            counter = batch.pop(_SKIPS, None)
            read_to_end = batch.pop(_READ_TO_END, False)
            if counter is not None and isinstance(skips, EpochSkips):
                skips.offer(self.stream.epoch, counter, read_to_end=read_to_end)
            if read_to_end:
                continue
            yield batch


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's init: SIGINT and SIGTERM are for the training process, which saves and then shuts
    its workers down. Launchers (accelerate's, torchrun's) and schedulers signal the whole process tree or
    group; a worker killed by that signal makes the training process fail before it can save."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(stream: BatchStream, num_workers: int = 0) -> Loader:
    """A DataLoader over ready-made batches, wrapped in :class:`Loader` (which takes the workers' skip counts
    off the batches); its own generator keeps the global RNG untouched, which exact resume relies on (a
    default DataLoader draws its worker seed from it)."""
    generator = torch.Generator().manual_seed(stream.seed + stream.epoch)
    kwargs = ({"prefetch_factor": 4, "persistent_workers": False, "worker_init_fn": ignore_stop_signals}
              if num_workers else {})
    return Loader(stream, DataLoader(stream, batch_size=None, num_workers=num_workers, generator=generator, **kwargs))
