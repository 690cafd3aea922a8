"""Momentum encoder + negative queue: losses with extra negatives against loop references, the
queue against a direct simulation, exact resume, and a recipe launched with the queue on."""

from __future__ import annotations

import math
import os
import random
import signal

import pytest
import torch
from safetensors.torch import load_file
from test_losses import PY, TORCH
from test_trainer import SENTENCES, make_items

from luse.config import load_config
from luse.errors import InputError
from luse.losses import luse_loss, simcse_sup_loss, simcse_unsup_loss
from luse.model.encoder import SentenceEncoder
from luse.objectives.momentum import MomentumObjective, MomentumQueue
from luse.objectives.triplets import TripletObjective
from luse.objectives.views import ViewsObjective
from luse.train import train
from luse.train.checkpoint import list_checkpoints

# --- losses with extra negatives -----------------------------------------------------------------


def luse_extra_reference(views, extra, temperature, ops):
    views, extra = ops.data(views), ops.data(extra)
    n_views = len(views[0])
    embeddings = [v for sentence in views for v in sentence]
    total = 0.0
    for i, anchor in enumerate(embeddings):
        others = [embeddings[k] for k in range(len(embeddings)) if k != i] + list(extra)
        denominator = sum(ops.exp(ops.cos(anchor, e) / temperature) for e in others)
        positives = [k for k in range(len(embeddings)) if k != i and k // n_views == i // n_views]
        total = total - sum(ops.log(ops.exp(ops.cos(anchor, embeddings[k]) / temperature) / denominator)
                            for k in positives) / (n_views - 1)
    return total / len(embeddings)


def simcse_extra_reference(anchor, positive, negative, extra, temperature, weight, ops):
    anchor, positive, extra = ops.data(anchor), ops.data(positive), ops.data(extra)
    negative = ops.data(negative) if negative is not None else []
    total = 0.0
    for i, a in enumerate(anchor):
        own = ops.exp(ops.cos(a, positive[i]) / temperature)
        denominator = sum(ops.exp(ops.cos(a, p) / temperature) for p in positive)
        denominator += sum(ops.exp(ops.cos(a, n) / temperature + (weight if j == i else 0.0))
                           for j, n in enumerate(negative))
        denominator += sum(ops.exp(ops.cos(a, e) / temperature) for e in extra)
        total = total - ops.log(own / denominator)
    return total / len(anchor)


@pytest.mark.parametrize("n_sentences,n_views,n_extra,seed", [(3, 2, 1, 0), (4, 3, 5, 1), (2, 4, 7, 2)])
def test_luse_with_extra_negatives_matches_loop(n_sentences, n_views, n_extra, seed):
    g = torch.Generator().manual_seed(seed)
    views = torch.randn(n_sentences, n_views, 6, generator=g, dtype=torch.float64)
    extra = torch.randn(n_extra, 6, generator=g, dtype=torch.float64) * 3  # norms must not matter
    got = luse_loss(views, 0.1, extra_negatives=extra)
    assert got.item() == pytest.approx(luse_extra_reference(views, extra, 0.1, PY), abs=1e-6)
    # gradient through both the batch and the extra negatives
    leaves = [views.clone().requires_grad_(), extra.clone().requires_grad_()]
    luse_loss(*leaves[:1], 0.1, extra_negatives=leaves[1]).backward()
    refs = [views.clone().requires_grad_(), extra.clone().requires_grad_()]
    luse_extra_reference(refs[0], refs[1], 0.1, TORCH).backward()
    for mine, ref in zip(leaves, refs):
        torch.testing.assert_close(mine.grad, ref.grad, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("with_negative,weight,n_extra", [(False, 0.0, 3), (True, 0.0, 4), (True, 0.7, 2)])
def test_simcse_sup_with_extra_negatives_matches_loop(with_negative, weight, n_extra):
    g = torch.Generator().manual_seed(n_extra)
    anchor, positive, negative = (torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(3))
    extra = torch.randn(n_extra, 6, generator=g, dtype=torch.float64)
    negative = negative if with_negative else None
    got = simcse_sup_loss(anchor, positive, negative, 0.05, weight, extra_negatives=extra)
    expected = simcse_extra_reference(anchor, positive, negative, extra, 0.05, weight, PY)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    views = torch.stack([anchor, positive], dim=1)
    unsup = simcse_unsup_loss(views, 0.05, extra_negatives=extra)
    assert unsup.item() == pytest.approx(simcse_extra_reference(anchor, positive, None, extra, 0.05, 0.0, PY),
                                         abs=1e-6)


def test_extra_negatives_lower_nothing_when_far_and_raise_the_loss_when_close():
    g = torch.Generator().manual_seed(3)
    views = torch.randn(4, 2, 8, generator=g, dtype=torch.float64)
    base = luse_loss(views, 0.05)
    assert torch.equal(luse_loss(views, 0.05, extra_negatives=views.new_zeros(0, 8)), base)
    close = views[:, 0] + 1e-3 * torch.randn(4, 8, generator=g, dtype=torch.float64)
    assert luse_loss(views, 0.05, extra_negatives=close) > base + math.log(1.5)
    with pytest.raises(InputError, match="extra_negatives"):
        luse_loss(views, 0.05, extra_negatives=torch.randn(3, 7))
    with pytest.raises(InputError, match="extra_negatives"):
        simcse_sup_loss(views[:, 0], views[:, 1], extra_negatives=torch.randn(8))


# --- the queue against a direct simulation ---------------------------------------------------------


class Recorder:
    """Wraps an objective's loss to record the extra negatives it was given."""

    def __init__(self, objective):
        self.objective, self.seen = objective, []

    def collate(self, items, rng):
        return self.objective.collate(items, rng)

    def positive_rows(self, batch):
        return self.objective.positive_rows(batch)

    def loss(self, embeddings, batch, extra_negatives=None):
        self.seen.append(None if extra_negatives is None else extra_negatives.clone())
        return self.objective.loss(embeddings, batch, extra_negatives=extra_negatives)


def _simulate(encoder, objective, batches, size, momentum, lr):
    """Run the MomentumObjective for real, and alongside it a plain re-implementation: an EMA dict of
    parameters, keys from a copy loaded with it (eval mode), a Python list as the FIFO."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    recorder = Recorder(objective)
    queued = MomentumObjective(recorder, size, momentum)
    queued.setup(accelerator, encoder)
    optimizer = torch.optim.SGD(encoder.parameters(), lr=lr)
    ema = {k: v.detach().clone() for k, v in encoder.named_parameters()}
    shadow = SentenceEncoder(type(encoder.backbone)(encoder.backbone.config), encoder.tokenizer,
                             pooling=encoder.pooling).eval()
    fifo, expected_seen = [], []
    encoder.train()
    for batch in batches:
        expected_seen.append(torch.stack(fifo[-size:]) if fifo else None)
        shadow.load_state_dict({**encoder.state_dict(), **ema})
        rows = objective.positive_rows(batch)
        inputs = {k: batch[k][rows] for k in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad():
            new_keys = list(shadow(**inputs))
        loss = queued.loss(encoder(**{k: batch[k] for k in inputs}), batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        queued.after_optimizer_step(encoder)
        with torch.no_grad():
            for k, v in encoder.named_parameters():
                ema[k] = momentum * ema[k] + (1 - momentum) * v
        fifo.extend(new_keys)
    return queued, recorder.seen, expected_seen, torch.stack(fifo[-size:]), ema


@pytest.mark.parametrize("kind", ["views", "triplets"])
def test_queue_contents_and_order_match_a_direct_simulation(tiny_bert, kind):
    torch.manual_seed(0)
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert), pooling="mean")
    config = load_config(None, ["views.dropout=2"])
    rng = random.Random(0)
    if kind == "views":
        objective = ViewsObjective(encoder.tokenizer, 32, config.views, config.loss)
        batches = [objective.collate(SENTENCES[i * 4:(i + 1) * 4], rng) for i in range(5)]
    else:
        objective = TripletObjective(encoder.tokenizer, 32, config.loss)
        rows = [tuple(SENTENCES[j + k] for k in (0, 1, 2)) for j in range(0, 60, 3)]
        batches = [objective.collate(rows[i * 4:(i + 1) * 4], rng) for i in range(5)]
    queued, seen, expected_seen, expected_queue, ema = _simulate(encoder, objective, batches, size=10,
                                                                 momentum=0.9, lr=0.5)
    # the loss saw, at each step, exactly the queue of the steps before it (never its own keys)
    assert seen[0] is None and len(seen) == 5
    for got, want in zip(seen[1:], expected_seen[1:]):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert [len(s) for s in seen[1:]] == [4, 8, 10, 10]
    torch.testing.assert_close(queued.queue.negatives(), expected_queue, atol=1e-6, rtol=1e-5)
    for name, param in queued.queue.encoder.named_parameters():
        torch.testing.assert_close(param, ema[name], atol=1e-6, rtol=1e-5)
    assert not queued.queue.encoder.training and not any(p.requires_grad for p in queued.queue.encoder.parameters())


def test_queue_is_fifo_and_bounded():
    queue = MomentumQueue(size=5, momentum=0.5)
    pushed = []
    for step in range(4):
        keys = torch.full((3, 2), float(step)) + torch.arange(3.0)[:, None] / 10
        queue.push(keys)
        pushed.extend(keys)
        assert torch.equal(queue.negatives(), torch.stack(pushed[-5:]))
    queue.push(torch.arange(14.0).view(7, 2))  # more than the queue holds: the newest 5 stay
    assert torch.equal(queue.negatives(), torch.arange(4.0, 14.0).view(5, 2))
    with pytest.raises(InputError, match="queue_size"):
        MomentumQueue(size=0, momentum=0.5)
    with pytest.raises(InputError, match="momentum"):
        MomentumQueue(size=3, momentum=1.5)


def test_config_rejects_a_queue_where_it_means_nothing():
    with pytest.raises(InputError, match="queue_size=0 with this loss"):
        load_config(None, ["loss.name=cosent", "loss.queue_size=8"])
    with pytest.raises(InputError, match="momentum"):
        load_config(None, ["loss.queue_size=8", "loss.momentum=-0.1"])
    assert load_config(None, ["loss.queue_size=8"]).loss.momentum == 0.995


# --- exact resume with a queue ---------------------------------------------------------------------

def _config(tmp_path, name, **overrides):
    base = {"output_dir": str(tmp_path / name), "max_steps": 6, "batch_size": 4, "lr": 1e-3, "save_every": 3,
            "eval.every": 3, "log_every": 1, "report_to": "none", "warmup_ratio": 0.3, "views.dropout": 1,
            "model.pooling": "mean", "loss.queue_size": 10, "loss.momentum": 0.9}
    base.update(overrides)
    return load_config(None, [f"{k}={v}" for k, v in base.items()])


def _run(config, tiny_bert, evaluate):
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert), pooling="mean", max_length=32)
    objective = MomentumObjective(ViewsObjective(encoder.tokenizer, 32, config.views, config.loss),
                                  config.loss.queue_size, config.loss.momentum)
    return train(config, objective, make_items, encoder=encoder, evaluate=evaluate), objective


def _queue_state(checkpoint):
    """The objective's state as accelerate saved it (the third registered object)."""
    return torch.load(checkpoint / "custom_checkpoint_2.pkl", weights_only=False)


def test_resume_with_a_queue_is_exact(tmp_path, tiny_bert):
    def score(encoder):
        return {"score": float(encoder.encode(SENTENCES[:2]).sum()), "table": ""}

    straight, objective_a = _run(_config(tmp_path, "a"), tiny_bert, score)
    assert straight.step == 6 and objective_a.queue.negatives().shape == (10, 32)

    def interrupt(encoder):
        os.kill(os.getpid(), signal.SIGINT)
        return score(encoder)

    first, _ = _run(_config(tmp_path, "b"), tiny_bert, interrupt)
    assert first.interrupted == "SIGINT" and first.step == 3
    saved = _queue_state(list_checkpoints(tmp_path / "b")[-1])
    assert saved["queue"].shape == (10, 32) and saved["pending"] == []  # 3 steps x 4 keys, the newest 10
    resumed, objective_b = _run(_config(tmp_path, "b", resume="latest"), tiny_bert, score)
    assert resumed.step == 6

    a, b = load_file(str(straight.final_dir / "model.safetensors")), load_file(str(resumed.final_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert torch.equal(objective_a.queue.negatives(), objective_b.queue.negatives())
    for (name, x), y in zip(objective_a.queue.encoder.state_dict().items(),
                            objective_b.queue.encoder.state_dict().values()):
        assert torch.equal(x, y), name
    # the checkpoint at step 6 holds the same queue as the live objective
    final_state = _queue_state(list_checkpoints(tmp_path / "a")[-1])
    assert torch.equal(final_state["queue"], objective_a.queue.negatives())


def test_queue_with_accumulation_grad_cache_and_workers(tmp_path, tiny_bert):
    """Keys of every micro-batch join the queue after the optimizer step, also under GradCache and
    with batches built in a DataLoader worker."""
    config = _config(tmp_path, "gc", max_steps=2, grad_accum=2, grad_cache_chunk=5, save_every=0,
                     **{"eval.every": 0, "data.num_workers": 1, "loss.queue_size": 20})
    result, objective = _run(config, tiny_bert, None)
    assert result.step == 2 and objective.pending == []
    assert objective.queue.negatives().shape == (16, 32)  # 2 steps x 2 micro-batches x 4 sentences


# --- a recipe with the queue on ---------------------------------------------------------------------

@pytest.mark.slow
def test_simcse_sup_recipe_with_a_queue(tmp_path, tiny_bert):
    import json

    from test_recipes import SENTENCES as ZH
    from test_recipes import launch

    triplets = tmp_path / "triplets.jsonl"
    triplets.write_text("".join(json.dumps({"anchor": a, "positive": a[:-1], "negative": b}, ensure_ascii=False) + "\n"
                                for a, b in zip(ZH, ZH[3:] + ZH[:3])), encoding="utf-8")
    out = tmp_path / "out"
    args = {"output_dir": out, "max_steps": 2, "batch_size": 4, "model.name_or_path": tiny_bert,
            "data.corpus": triplets, "eval.every": 0, "save_every": 1, "report_to": "none",
            "loss.queue_size": 6, "loss.momentum": 0.99}
    result = launch("simcse_sup", [f"{k}={v}" for k, v in args.items()])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "final" / "model.safetensors").exists()
    state = _queue_state(out / "checkpoints" / "step-00000002")
    assert state["queue"].shape == (6, 32)  # 2 steps x 4 positives, the newest 6
    step1 = _queue_state(out / "checkpoints" / "step-00000001")
    assert torch.equal(step1["queue"][-2:], state["queue"][:2])  # FIFO: step 1's last keys moved to the front
    assert not torch.equal(step1["encoder"]["backbone.pooler.dense.weight"], state["encoder"]["backbone.pooler.dense.weight"])


@pytest.mark.slow
def test_two_processes_fill_the_queue_like_one(tmp_path):
    """2 processes x 4 sentences fill the queue exactly as 1 process x 8 (keys gathered in rank order)."""
    from test_recipes import SENTENCES as ZH
    from test_recipes import launch
    from tiny_models import make_tiny_model

    model = make_tiny_model(tmp_path / "model", dropout=0.0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(ZH * 2) + "\n", encoding="utf-8")
    args = {"max_steps": 2, "model.name_or_path": model, "data.corpus": corpus, "data.min_chars": 2,
            "eval.every": 0, "save_every": 1, "report_to": "none", "lr": 1e-3, "loss.queue_size": 12,
            "loss.momentum": 0.9, "mixed_precision": "no"}  # bf16 rounds differently once the batch is split
    states = []
    for name, batch, processes in (("one", 8, 1), ("two", 4, 2)):
        run = {**args, "output_dir": tmp_path / name, "batch_size": batch}
        result = launch("simcse_unsup", [f"{k}={v}" for k, v in run.items()], processes=processes)
        assert result.returncode == 0, result.stderr[-3000:]
        states.append(_queue_state(tmp_path / name / "checkpoints" / "step-00000002"))
    one, two = states
    assert one["queue"].shape == two["queue"].shape == (12, 32)
    torch.testing.assert_close(two["queue"], one["queue"], atol=1e-4, rtol=1e-3)
    assert not torch.equal(one["queue"][:4], one["queue"][4:8])
