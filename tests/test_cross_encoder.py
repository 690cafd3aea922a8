"""Cross-encoder: scores against a manual forward pass for 1- and 2-label heads, and the recipe
launched with accelerate (BCE and MSE), its checkpoint and its plain save_pretrained export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import REPO
from test_recipes import SENTENCES as ZH
from test_recipes import launch

from luse.config import read_config
from luse.errors import InputError
from luse.model.cross_encoder import CrossEncoder, load_cross_encoder
from luse.objectives.cross import cross_pairs

PAIRS = [(ZH[i], ZH[(i * 5 + 1) % len(ZH)]) for i in range(len(ZH))]


def seq_classifier(tiny_bert, out, num_labels):
    """A real Hugging Face sequence-classification checkpoint (random head) on the tiny encoder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(num_labels)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=num_labels)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(out)
    return out


def manual_scores(path, pairs, transform):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    with torch.no_grad():  # one pair at a time: no padding involved
        return np.array([float(transform(model(**tokenizer(a, b, return_tensors="pt")).logits[0]))
                         for a, b in pairs])


@pytest.mark.parametrize("num_labels,activation,transform", [
    (1, None, lambda logits: logits[0].sigmoid()),
    (1, "identity", lambda logits: logits[0]),
    (2, None, lambda logits: logits.softmax(-1)[1]),
])
def test_scores_match_a_manual_forward(tiny_bert, tmp_path, num_labels, activation, transform):
    path = seq_classifier(tiny_bert, tmp_path / "ce", num_labels)
    model = CrossEncoder.from_pretrained(str(path), activation=activation)
    got = model.predict(PAIRS, batch_size=5)  # batches mix lengths: padding must not change scores
    np.testing.assert_allclose(got, manual_scores(path, PAIRS, transform), atol=1e-5)
    assert got.dtype == np.float32 and got.shape == (len(PAIRS),)
    if num_labels == 2 or activation is None:
        assert ((got > 0) & (got < 1)).all()


def test_save_records_activation_and_loads_back(tiny_bert, tmp_path):
    model = CrossEncoder.from_pretrained(str(tiny_bert), num_labels=1, max_length=40, activation="identity")
    model.save(tmp_path / "saved", metadata={"step": 3})
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["luse_score_activation"] == "identity" and len(config["id2label"]) == 1
    loaded = load_cross_encoder(str(tmp_path / "saved"), device="cpu")
    assert loaded.activation == "identity" and loaded.max_length == 40 and loaded.num_labels == 1
    np.testing.assert_allclose(loaded.predict(PAIRS[:4]), model.predict(PAIRS[:4]), atol=1e-6)
    assert not list(tmp_path.glob(".saved*"))  # atomic: no temporary left


def test_bce_labels_must_be_probabilities(tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(f"{ZH[0]}\t{ZH[1]}\t1\n{ZH[2]}\t{ZH[3]}\t4.5\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"pairs.tsv: expected labels in \[0, 1\].*4.5 in pair 2"):
        list(cross_pairs(str(pairs), "cross_bce"))
    assert sorted(row[2] for row in cross_pairs(str(pairs), "cross_mse")) == [1.0, 4.5]
    yaml_file = REPO / "recipes" / "configs" / "cross_encoder.yaml"
    with pytest.raises(InputError, match="loss.name to be one of cross_bce, cross_mse"):
        read_config(yaml_file, ["loss.name=luse"], losses=("cross_bce", "cross_mse"))


def labelled_pairs(path, scored=False):
    """Positive: a sentence and itself minus its last character; negative: two unrelated sentences."""
    rows = []
    for i, sentence in enumerate(ZH):
        rows.append({"sentence1": sentence, "sentence2": sentence[:-1], "label": 5.0 if scored else 1})
        rows.append({"sentence1": sentence, "sentence2": ZH[(i + 4) % len(ZH)], "label": 0})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("loss,activation", [pytest.param("cross_bce", "sigmoid", marks=pytest.mark.slow),
                                             ("cross_mse", "identity")])
def test_recipe_trains_checkpoints_and_exports(tiny_bert, tmp_path, loss, activation):
    from transformers import AutoModelForSequenceClassification

    data = labelled_pairs(tmp_path / "pairs.jsonl", scored=loss == "cross_mse")
    sts = tmp_path / "sts.tsv"
    sts.write_text("".join(f"{a}\t{b}\t{i % 3}\n" for i, (a, b) in enumerate(PAIRS)), encoding="utf-8")
    out = tmp_path / "out"
    args = {"output_dir": out, "max_steps": 2, "batch_size": 4, "model.name_or_path": tiny_bert,
            "data.corpus": f"[{data}]", "loss.name": loss, "eval.sts": f"[{sts}]", "eval.every": 1,
            "save_every": 1, "report_to": "none", "lr": 1e-3}
    argv = [f"{k}={v}" for k, v in args.items()]
    if loss == "cross_bce":  # as users run it
        result = launch("cross_encoder", argv)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "cross-encoder Spearman x100" in result.stdout + result.stderr
    else:  # in this process (faster): the same wiring as recipes/cross_encoder.py
        from conftest import recipe_main

        from luse.train import exit_code

        assert exit_code("cross_encoder", recipe_main("cross_encoder"), argv) == 0
    final = out / "final"
    model = AutoModelForSequenceClassification.from_pretrained(final)  # plain HF, no luse needed
    assert model.config.num_labels == 1 and model.config.luse_score_activation == activation
    assert (out / "best" / "model.safetensors").exists() and (out / "checkpoints" / "step-00000002").is_dir()
    # training moved the weights of the head it created
    start = CrossEncoder.from_pretrained(str(tiny_bert), num_labels=1)
    trained = load_cross_encoder(str(final), device="cpu")
    assert trained.activation == activation
    assert not torch.equal(start.model.bert.embeddings.word_embeddings.weight,
                           trained.model.bert.embeddings.word_embeddings.weight)


def test_sentence_vector_recipes_refuse_cross_losses():
    yaml_file = REPO / "recipes" / "configs" / "pretrain_luse.yaml"
    with pytest.raises(InputError, match="trains with recipes/cross_encoder.py"):
        read_config(yaml_file, ["loss.name=cross_mse"], losses=("luse", "simcse_unsup"))
