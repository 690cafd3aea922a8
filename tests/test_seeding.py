"""Named seeds (luse.data.seeding): every seeded stream of the data pipeline comes from one hash of its parts."""

from __future__ import annotations

from luse.data.corpus import epoch_seed
from luse.data.loader import batch_rng
from luse.data.seeding import stable_rng, stable_seed


def test_seeds_are_pinned_across_releases_and_processes():
    # Pinned values: a change here changes every shuffle, band order and view of a seeded run, so the
    # figures in benchmarks/results would no longer reproduce from the code.
    assert epoch_seed(1, 2) == stable_seed(1, 2, "shuffle") == 1891807032603457606
    assert epoch_seed(1, 2, "sources") == 8316197532787810779
    assert batch_rng(1, 2, 3, 0).random() == 0.7620482531010474
    assert stable_rng("length", 1, 2, 3).random() == 0.12633902262933394


def test_different_parts_give_different_streams():
    assert stable_seed(1, 2, 3) != stable_seed(1, 2, 4) != stable_seed("length", 1, 2, 4)
    assert stable_rng(1, 2).random() == stable_rng(1, 2).random()
