"""The anchor (luse.objectives.anchor): similarity distillation toward a frozen copy of the base."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from luse.config import load_config
from luse.errors import InputError
from luse.model.encoder import SentenceEncoder
from luse.model.export import declared_pooling
from luse.objectives.anchor import AnchorObjective, distinct_rows, with_anchor
from luse.objectives.momentum import MomentumObjective
from luse.objectives.views import ViewsObjective
from luse.train import train

SENTENCES = ["今天天气很好", "明天会下雨吗", "我喜欢读书", "他在公园跑步", "这家店的面很好吃", "火车晚点了",
             "猫在睡觉", "我们去看电影吧"]


def make_items(epoch):
    """A plain iterator, not a generator: train() takes any iterable (the data probe once required close())."""
    order = list(SENTENCES)
    random.Random(epoch).shuffle(order)
    return iter(order)


class CpuAccelerator:
    """What AnchorObjective.setup reads from an Accelerator."""

    @staticmethod
    def unwrap_model(model):
        return model

    @staticmethod
    def autocast():
        return torch.autocast("cpu", enabled=False)


def test_distinct_rows_are_first_occurrences_in_order():
    ids = torch.tensor([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4], [5, 6]])
    assert distinct_rows(ids).tolist() == [0, 1, 3]


def naive_distill(student, teacher, weight):
    n = len(student)
    total = 0.0
    for i in range(n):
        for j in range(n):
            cs = F.cosine_similarity(student[i], student[j], dim=0)
            ct = F.cosine_similarity(teacher[i], teacher[j], dim=0)
            total = total + (ct - cs) ** 2
    return weight * total / n**2


@pytest.mark.parametrize(("eda", "sentences"), [(0, 0), (2, 0), (0, 2), (0, 3), (0, 9)])
def test_loss_is_the_inner_loss_plus_distillation_over_the_sentences(tiny_bert, eda, sentences):
    config = load_config(None, ["views.dropout=2", f"views.eda={eda}", "loss.anchor_weight=7"])
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert), pooling="cls", max_length=32)
    augmenter = (lambda s, n, rng: [s[::-1], s + "。"][:n]) if eda else None
    inner = ViewsObjective(encoder.tokenizer, 32, config.views, config.loss, augmenter)
    objective = AnchorObjective(inner, 7.0, pooling="mean", sentences=sentences)
    objective.setup(CpuAccelerator(), encoder)
    batch = inner.collate(SENTENCES[:4], random.Random(0))
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    encoder.train()
    embeddings = encoder(**inputs)
    got = objective.loss(embeddings, batch)

    views = inner.num_views
    distinct = [b * views for b in range(4)]  # view 0, the sentence: text views add no teacher forward
    # anchor_sentences=k: k of them, evenly spaced from the first (more than the batch has: all of them)
    distinct = {2: distinct[0::2], 3: distinct[:3]}.get(sentences, distinct)
    with torch.no_grad():
        base = SentenceEncoder.from_pretrained(str(tiny_bert), pooling="cls", max_length=32).eval()
        teacher = base(**{k: v[distinct] for k, v in inputs.items()}, pooling="mean")
    expected = inner.loss(embeddings, batch) + naive_distill(embeddings[distinct], teacher, 7.0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    got.backward()  # gradients reach the student only
    assert all(p.grad is None for p in objective.base.parameters())


def test_the_base_stays_the_base_while_the_student_trains(tmp_path, tiny_bert):
    config = load_config(None, [f"output_dir={tmp_path / 'run'}", "max_steps=3", "batch_size=4", "lr=1e-2",
                                "views.dropout=1", "views.eda=0", "loss.anchor_weight=50", "save_every=0",
                                "eval.every=0", "report_to=none", "model.pooling=cls", "data.num_workers=0"])
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert), pooling="cls", max_length=32)
    start = {k: v.clone() for k, v in encoder.backbone.state_dict().items()}
    objective = with_anchor(config.loss, config.model, ViewsObjective(encoder.tokenizer, 32, config.views, config.loss))
    result = train(config, objective, make_items, encoder=encoder)
    trained = load_file(str(result.final_dir / "model.safetensors"))
    assert any(not torch.equal(trained[k], start[k]) for k in trained if k in start)
    for name, tensor in objective.base.backbone.state_dict().items():
        assert torch.equal(tensor, start[name]), name
    # the export records the time spent in the training loop (benchmarks compare trainers by it)
    info = json.loads((result.final_dir / "luse.json").read_text(encoding="utf-8"))
    assert info["metadata"]["train_seconds"] > 0


def test_hooks_of_the_wrapped_objective_pass_through(tiny_bert):
    config = load_config(None, ["views.dropout=1", "loss.queue_size=4", "loss.anchor_weight=1"])
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert), pooling="cls", max_length=32)
    queue = MomentumObjective(ViewsObjective(encoder.tokenizer, 32, config.views, config.loss), 4, 0.9)
    anchored = with_anchor(config.loss, config.model, queue)
    assert anchored.after_optimizer_step == queue.after_optimizer_step
    assert anchored.state_dict == queue.state_dict and anchored.load_state_dict == queue.load_state_dict


def test_an_anchor_around_the_queue_distils_over_the_sentences(tiny_bert):
    config = load_config(None, ["views.dropout=1", "views.eda=1", "loss.queue_size=4", "loss.anchor_weight=1"])
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert), pooling="cls", max_length=32)
    inner = ViewsObjective(encoder.tokenizer, 32, config.views, config.loss, lambda s, n, rng: [s[::-1]][:n])
    anchored = with_anchor(config.loss, config.model, MomentumObjective(inner, 4, 0.9))
    batch = inner.collate(SENTENCES[:4], random.Random(0))
    # The EDA view is a distinct text; the anchor still takes view 0 alone, as it does without the queue.
    assert anchored.positive_rows(batch).tolist() == [0, 3, 6, 9]


def test_declared_pooling_reads_what_the_base_says(tmp_path):
    st = tmp_path / "st"
    (st / "1_Pooling").mkdir(parents=True)
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert declared_pooling(st, "cls") == "mean"
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert declared_pooling(st, "mean") == "cls"
    uniem = tmp_path / "uniem"
    uniem.mkdir()
    (uniem / "config.json").write_text(json.dumps({"uniem_embedding_strategy": "last_mean"}))
    assert declared_pooling(uniem, "cls") == "mean"
    exported = tmp_path / "luse"
    exported.mkdir()
    (exported / "luse.json").write_text(json.dumps({"pooling": "pooler"}))
    assert declared_pooling(exported, "cls") == "pooler"
    assert declared_pooling(tmp_path / "plain", "cls") == "cls"
    assert declared_pooling("org/hub-name", "pooler") == "pooler"


def test_config_checks_the_anchor_keys():
    with pytest.raises(InputError, match="anchor_weight"):
        load_config(None, ["loss.anchor_weight=-1"])
    with pytest.raises(InputError, match="anchor_pooling"):
        load_config(None, ["loss.anchor_pooling=max"])
    with pytest.raises(InputError, match="anchor_sentences"):
        load_config(None, ["loss.anchor_sentences=-1"])
