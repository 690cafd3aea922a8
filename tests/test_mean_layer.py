"""model.export_as_cls: a mean-pooled encoder served at [CLS] of a plain model, through one fixed extra layer."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from luse.errors import InputError
from luse.model.encoder import SentenceEncoder
from luse.model.export import export_encoder, load_encoder
from luse.model.mean_layer import append_mean_layer, mean_layer_support

SENTENCES = ["今天天气很好", "Hello, world!", "自然语言处理 is fun, 123", "好", "这是一个比较长的句子，用来测试填充。"]


def moved(path, pooling="mean", seed=0) -> SentenceEncoder:
    """The tiny model with its weights moved off their initialisation, as training would."""
    encoder = SentenceEncoder.from_pretrained(str(path), pooling=pooling, max_length=32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return encoder.eval()


def naive_mean(backbone, tokenizer) -> torch.Tensor:
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        hidden = backbone(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


def cosines(vectors: torch.Tensor) -> torch.Tensor:
    unit = nn.functional.normalize(vectors, dim=-1)
    return unit @ unit.T


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_roformer"])
def test_cls_of_the_appended_layer_is_the_masked_mean(model, request):
    encoder = moved(request.getfixturevalue(model))
    served = append_mean_layer(encoder.backbone).eval()
    assert served.config.num_hidden_layers == encoder.backbone.config.num_hidden_layers + 1
    assert len(encoder.backbone.encoder.layer) == served.config.num_hidden_layers - 1  # the original is untouched
    mean = naive_mean(encoder.backbone, encoder.tokenizer)
    batch = encoder.tokenizer(SENTENCES, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        cls = served(**batch).last_hidden_state[:, 0]
    centred = mean - mean.mean(-1, keepdim=True)  # the LayerNorm removes the feature mean, nothing else
    assert torch.allclose(nn.functional.normalize(cls, dim=-1), nn.functional.normalize(centred, dim=-1),
                          atol=5e-3)
    assert torch.allclose(cosines(cls), cosines(mean), atol=2e-2)


def test_export_as_cls_serves_the_mean_in_plain_transformers(tiny_bert, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    encoder = moved(tiny_bert)
    out = export_encoder(encoder, tmp_path / "export", as_cls=True)
    info = json.loads((out / "luse.json").read_text())
    assert info["pooling"] == "cls" and info["mean_layer"] is True
    assert "its [CLS] output is the masked mean" in (out / "README.md").read_text()
    model, tokenizer = AutoModel.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        served = model(**batch)[0][:, 0]
        trained = encoder(**encoder.tokenize(SENTENCES))
    assert torch.allclose(cosines(served), cosines(trained), atol=2e-2)
    loaded = load_encoder(out).eval()  # luse reads the export back in the pooling it declares: cls
    with torch.no_grad():
        again = loaded(**loaded.tokenize(SENTENCES))
    assert torch.allclose(again, served, atol=1e-4)


def test_export_as_cls_refuses_other_poolings(tiny_bert, tmp_path):
    encoder = moved(tiny_bert, pooling="pooler")
    with pytest.raises(InputError, match="model.pooling=mean"):
        export_encoder(encoder, tmp_path / "export", as_cls=True)
    assert not (tmp_path / "export").exists()


def test_unsupported_backbone_is_named():
    assert "no encoder.layer" in mean_layer_support(nn.Linear(2, 2))


def test_a_backbone_without_bert_layers_keeps_mean_pooling(tiny_bert, tmp_path, caplog, monkeypatch):
    """Where no mean layer fits, the export keeps the trained vector as declared mean pooling, and says so."""
    import luse.model.mean_layer as mean_layer

    monkeypatch.setattr(mean_layer, "mean_layer_support", lambda backbone: "its layers are not BERT's")
    out = export_encoder(moved(tiny_bert), tmp_path / "export", as_cls=True)
    info = json.loads((out / "luse.json").read_text())
    assert info["pooling"] == "mean" and info["mean_layer"] is False
    assert "exported with mean pooling, not as [CLS]" in caplog.text
