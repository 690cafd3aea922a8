"""Deterministic, resumable batches for one process, built in DataLoader workers.

The raw item stream (sentences, pairs, triplets) is cut into *global* batches of
``batch_size * world_size`` items; process ``rank`` keeps its slice, so the global batch is the
same whether it runs on one process or on many. Each DataLoader worker reads the (cheap) raw
stream in full but builds (augments and tokenises, the expensive part) only the batches whose
index falls to it; PyTorch hands the workers' batches back round-robin, so the order is the same
for any number of workers. Resuming skips consumed batches at the raw-item level, before any
augmentation or tokenisation, and every batch draws its randomness from (seed, epoch, batch
index), so a resumed run sees exactly the batches the uninterrupted run would have seen.

With ``all_epochs`` the stream goes on from one epoch to the next, so one DataLoader, and one set of workers,
serves the whole run. A worker forked per epoch would be forked from a training process that has grown by then
(activations, optimizer state): every page the trainer then writes is copied for the worker, so each epoch's fork
held a second copy of the trainer's memory (the out-of-memory kills on SOHU's small corpora, many epochs a run:
``benchmarks/results/run_memory.md``). Every worker yields the same number of items per epoch (a filler where it
built one batch fewer), so PyTorch's round-robin collection keeps the order across epoch boundaries.

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
from collections.abc import Callable, Generator, Iterable, Iterator
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from luse.data.length_groups import length_grouped
from luse.data.seeding import stable_rng
from luse.data.skips import EpochSkips

_SKIPS = "_luse_skips"  # a worker's SkipCounter riding along with a batch
_READ_TO_END = "_luse_read_to_end"  # the item a worker sends after its stream ended: only its counter
_FILLER = "_luse_filler"  # the item a worker sends for a batch it had no turn to build (epoch boundaries)
_EPOCH = "_luse_epoch"  # the epoch a batch (or a worker's item) belongs to


def batch_rng(seed: int, epoch: int, index: int, rank: int) -> random.Random:
    """A random generator private to one batch (independent of worker count and of Python's hash salt)."""
    return stable_rng(seed, epoch, index, rank)


class BatchStream(IterableDataset):
    """Yields ``collate(local_items, rng)`` for each global batch of one epoch (``all_epochs``: of this epoch
    and every one after it, until an epoch without one complete batch).

    ``make_items(epoch)`` must return the same sequence every time it is called with the same
    epoch (seeded shuffling). Incomplete trailing batches are dropped so every process takes
    the same number of steps. ``length_groups > 1`` sorts that many global batches at a time by length
    (:mod:`luse.data.length_groups`). ``skip_batches`` applies to the first epoch.
    """

    def __init__(self, make_items: Callable[[int], Iterable], collate: Callable[[list, random.Random], dict],
                 *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, epoch: int = 0,
                 skip_batches: int = 0, length_groups: int = 0, all_epochs: bool = False):
        self.make_items, self.collate = make_items, collate
        self.length_groups, self.all_epochs = length_groups, all_epochs
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.epoch, self.skip_batches = seed, epoch, skip_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        skips = getattr(self.make_items, "skips", None) if info is not None else None
        skips = skips if isinstance(skips, EpochSkips) else None
        epoch, skip = self.epoch, self.skip_batches
        while True:
            complete = yield from self._batches(epoch, skip, worker, workers, skips)
            # Batch skip + b is built by worker b % workers: one with a turn fewer sends a filler, so every
            # worker sends as many items per epoch and the next epoch starts again at worker 0.
            turns = max(0, complete - skip) % workers
            if turns and worker >= turns:
                yield {_FILLER: True, _EPOCH: epoch}
            if skips is not None and epoch in skips:  # read to the end: the whole pass's counts
                yield {_SKIPS: skips[epoch], _READ_TO_END: True, _EPOCH: epoch}
            if not self.all_epochs or complete == 0:
                return
            epoch, skip = epoch + 1, 0

    def _batches(self, epoch: int, skip: int, worker: int, workers: int,
                 skips: EpochSkips | None) -> Generator[dict[str, Any], None, int]:
        """This worker's batches of ``epoch``, each with its epoch (and the worker's skip counts so far);
        returns the epoch's number of complete batches."""
        global_size = self.batch_size * self.world_size
        items = length_grouped(self.make_items(epoch), global_size, self.length_groups, self.seed, epoch)
        index = 0
        while True:
            # Worker w builds batches skip + w, skip + w + workers, ...: the order PyTorch collects them in.
            if index < skip or (index - skip) % workers != worker:
                # Not ours: consume the raw items without building anything.
                if sum(1 for _ in islice(items, global_size)) < global_size:
                    break
                index += 1
                continue
            chunk = list(islice(items, global_size))
            if len(chunk) < global_size:
                break
            local = chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
            batch = self.collate(local, batch_rng(self.seed, epoch, index, self.rank))
            batch["batch_index"], batch[_EPOCH] = index, epoch
            if skips is not None:
                batch[_SKIPS] = skips.get(epoch)
            yield batch
            index += 1
        return index


class Loader:
    """Iterates a DataLoader over a :class:`BatchStream` and yields its batches, taking off what workers send
    along: skip counts (offered to ``make_items.skips``; a worker's last item of an epoch carries only those),
    fillers, and the batch's epoch (``self.epoch``: the epoch of the batch yielded last)."""

    def __init__(self, stream: BatchStream, loader: DataLoader):
        self.stream, self.loader = stream, loader
        self.epoch = stream.epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        skips = getattr(self.stream.make_items, "skips", None)
        for batch in self.loader:
            epoch = batch.pop(_EPOCH, self.stream.epoch)
            counter = batch.pop(_SKIPS, None)
            read_to_end = batch.pop(_READ_TO_END, False)
            if counter is not None and isinstance(skips, EpochSkips):
                skips.offer(epoch, counter, read_to_end=read_to_end)
            if read_to_end or batch.pop(_FILLER, False):
                continue
            self.epoch = epoch
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
