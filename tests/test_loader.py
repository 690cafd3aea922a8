"""Batches are the same for any number of workers and after skipping (exact resume)."""

import random

import torch

from luse.data.loader import BatchStream, batch_rng, make_loader


def make_items(epoch):
    rng = random.Random(epoch)
    items = [f"s{i}" for i in range(53)]
    rng.shuffle(items)
    return iter(items)


def collate(items, rng):
    return {"items": list(items), "draw": rng.random(), "x": torch.tensor([len(items)])}


def _run(num_workers=0, skip=0, rank=0, world=1, epoch=0):
    stream = BatchStream(make_items, collate, batch_size=4, rank=rank, world_size=world, seed=3, epoch=epoch,
                         skip_batches=skip)
    return [(b["batch_index"], b["items"], b["draw"]) for b in make_loader(stream, num_workers)]


def test_order_independent_of_workers_and_skip():
    plain = _run()
    assert len(plain) == 53 // 4  # the incomplete last batch is dropped
    assert _run(num_workers=2) == plain
    assert _run(num_workers=3, skip=5) == plain[5:]
    assert _run(skip=5) == plain[5:]


def test_processes_split_the_global_batch():
    single = _run(world=1)
    r0, r1 = _run(rank=0, world=2), _run(rank=1, world=2)
    merged = [a[1] + b[1] for a, b in zip(r0, r1)]
    flat_single = [x for _, items, _ in single for x in items]
    assert [x for batch in merged for x in batch] == flat_single[: len(merged) * 8]


def test_epochs_differ_and_batch_rng_is_stable():
    assert _run(epoch=0) != _run(epoch=1)
    assert batch_rng(1, 2, 3, 0).random() == batch_rng(1, 2, 3, 0).random()
    assert batch_rng(1, 2, 3, 0).random() != batch_rng(1, 2, 4, 0).random()


def test_loader_leaves_global_rng_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(make_loader(BatchStream(make_items, collate, batch_size=4, seed=1)))
    assert torch.equal(before, torch.get_rng_state())
