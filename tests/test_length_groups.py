"""Length-grouped batches: the same items, batches of one length band each, exact under resume and workers."""

import random

import pytest

from luse.config import load_config
from luse.data.length_groups import item_length, length_grouped
from luse.data.loader import BatchStream, make_loader
from luse.errors import InputError


def sentences(epoch=0, n=203):
    rng = random.Random(epoch)
    items = ["x" * rng.randint(1, 60) + f"#{i}" for i in range(n)]
    rng.shuffle(items)
    return iter(items)


def collate(items, rng):
    return {"items": list(items), "draw": rng.random()}


def spread(batches):
    """Mean over batches of (longest - shortest) length."""
    return sum(max(map(len, b)) - min(map(len, b)) for b in batches) / len(batches)


def test_same_items_and_tighter_batches():
    plain = list(sentences())
    grouped = list(length_grouped(sentences(), batch_size=8, group=8, seed=0, epoch=0))
    assert sorted(grouped) == sorted(plain)  # a reordering: nothing lost or repeated
    cut = len(plain) // 64 * 64  # the complete groups
    as_batches = [grouped[i:i + 8] for i in range(0, cut, 8)]
    assert spread(as_batches) < spread([plain[i:i + 8] for i in range(0, cut, 8)]) / 4
    # The bands come in random order, not shortest first.
    firsts = [min(map(len, b)) for b in as_batches[:8]]
    assert firsts != sorted(firsts)


def test_off_keeps_the_order_and_seed_changes_it():
    assert list(length_grouped(sentences(), 8, 1, 0, 0)) == list(sentences())
    assert list(length_grouped(sentences(), 8, 0, 0, 0)) == list(sentences())
    a = list(length_grouped(sentences(), 8, 8, seed=0, epoch=0))
    assert a == list(length_grouped(sentences(), 8, 8, seed=0, epoch=0))
    assert a != list(length_grouped(sentences(), 8, 8, seed=1, epoch=0))


def test_leftover_is_not_the_longest():
    # 203 items in groups of 64: the last group's 11 items are a random leftover, not sorted to the end.
    items = list(sentences())
    grouped = list(length_grouped(iter(items), 8, 8, 0, 0))
    assert grouped[-3:] == items[-3:]


def _run(num_workers=0, skip=0, rank=0, world=1):
    stream = BatchStream(sentences, collate, batch_size=4, rank=rank, world_size=world, seed=3,
                         skip_batches=skip, length_groups=4)
    return [(b["batch_index"], b["items"], b["draw"]) for b in make_loader(stream, num_workers)]


def test_stream_is_exact_under_resume_workers_and_processes():
    plain = _run()
    assert len(plain) == 203 // 4
    assert _run(num_workers=2, skip=7) == plain[7:]
    merged = [a[1] + b[1] for a, b in zip(_run(rank=0, world=2), _run(rank=1, world=2))]
    # Two processes: each global batch of 8 is one length band, split between them.
    assert spread(merged) < spread([[*b] for b in zip(*[iter(list(sentences()))] * 8)]) / 3


def test_item_length_of_pairs_is_their_longest_text():
    assert item_length("abc") == 3
    assert item_length(("ab", "abcde")) == 5
    assert item_length({"anchor": "a", "positive": "abcd"}) == 4


def test_config_refuses_a_negative_group():
    with pytest.raises(InputError, match="length_groups"):
        load_config(None, ["data.length_groups=-1"])
    assert load_config(None, ["data.length_groups=16"]).data.length_groups == 16
