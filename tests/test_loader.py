"""Batches are the same for any number of workers and after skipping (exact resume)."""

import random

import pytest
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


def _half_gbk_corpus(path, lines=40):
    """Every other line GBK (not UTF-8): skipped and counted by the corpus reader."""
    with open(path, "wb") as f:
        for i in range(lines):
            text = f"第{i}句话，用来训练句子向量。"
            f.write((text.encode("gbk") if i % 2 else text.encode("utf-8")) + b"\n")
    return path


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_skip_counts_reach_the_main_process_with_any_number_of_workers(tmp_path, num_workers, caplog):
    """Workers read the corpus; what they skipped is reported by the main process (issue 16, case 4)."""
    import logging

    from luse.config import load_config
    from luse.data.items import CorpusItems

    corpus = _half_gbk_corpus(tmp_path / "half-gbk.txt")
    config = load_config(None, [f"data.corpus=[{corpus}]", f"data.num_workers={num_workers}",
                                "data.shuffle_buffer=4", "data.min_chars=2"])
    items = CorpusItems(config)

    def collate(sentences, rng):
        return {"items": list(sentences)}

    # Part of an epoch, as a run with max_steps stops: counts as far as the workers read.
    loader = make_loader(BatchStream(items, collate, batch_size=4, seed=1), num_workers)
    taken = [batch for _, batch in zip(range(2), loader)]
    assert all(set(batch) == {"items", "batch_index"} for batch in taken)  # the counts ride off the batches
    assert items.skips[0].skipped() >= 1 and 0 not in items.skips.complete
    # A whole epoch: the full counts, from whichever reader got to the end.
    assert len(list(make_loader(BatchStream(items, collate, batch_size=4, seed=1, epoch=1), num_workers))) == 5
    assert 1 in items.skips.complete
    expected = f"skipped 20 of 40 lines: 20 invalid UTF-8 (first at {corpus}:2); skipped 0 of 20 sentences"
    assert items.skips[1].report() == expected

    logger = logging.getLogger("luse")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="luse")
    propagate, logger.propagate = logger.propagate, False  # each record once, however a recipe set logging up
    try:
        items.report_skips()
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate
    assert [r.getMessage() for r in caplog.records] == [f"data (one full pass over data.corpus): {expected}"]


@pytest.mark.parametrize("num_workers", [0, 1, 2, 3])
@pytest.mark.parametrize("skip", [0, 4, 5])
def test_all_epochs_is_the_epochs_one_after_another(num_workers, skip):
    """One stream over every epoch gives the per-epoch streams' batches in order, with any number of workers
    (13 batches an epoch: workers with a turn fewer send fillers at each boundary) and a resumed first epoch."""
    stream = BatchStream(make_items, collate, batch_size=4, seed=3, epoch=1, skip_batches=skip, all_epochs=True)
    loader = make_loader(stream, num_workers)
    got, epochs = [], []
    for batch in loader:
        got.append((batch["batch_index"], batch["items"], batch["draw"]))
        epochs.append(loader.epoch)
        if len(got) == 3 * 13 - skip:
            break
    expected = _run(epoch=1, skip=skip) + _run(epoch=2) + _run(epoch=3)
    assert got == expected
    assert epochs == [1] * (13 - skip) + [2] * 13 + [3] * 13


def test_the_training_loop_forks_its_data_workers_once_for_every_epoch():
    """A worker forked per epoch is a copy of the trainer as it has grown by then (the SOHU out-of-memory kills):
    the loop's batches come from one worker process however many epochs it runs, and its epoch counters follow."""
    import os
    from types import SimpleNamespace

    from luse.config import load_config
    from luse.train.checkpoint import TrainState
    from luse.train.loop import batches

    config = load_config(None, ["batch_size=4", "data.num_workers=1", "data.length_groups=0"])
    state = TrainState()
    run = SimpleNamespace(config=config, state=state,
                          accelerator=SimpleNamespace(process_index=0, num_processes=1))
    objective = SimpleNamespace(collate=lambda items, rng: {"items": list(items), "pid": os.getpid()})
    seen = []
    for batch in batches(run, objective, lambda epoch: iter([f"e{epoch}s{i}" for i in range(13)])):  # 3 an epoch
        seen.append((batch["pid"], batch["items"][0][:2], state.epoch, state.batches_in_epoch))
        if len(seen) == 10:
            break
    assert len({pid for pid, *_ in seen}) == 1 and seen[0][0] != os.getpid()
    assert [(first, epoch, n) for _, first, epoch, n in seen] == [
        (f"e{e}", e, n) for e in range(4) for n in (1, 2, 3)][:10]
