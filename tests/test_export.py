"""Exports load without luse and give exactly the vectors the encoder gives."""

from __future__ import annotations

import json
import logging
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from luse.errors import InputError
from luse.model.encoder import SentenceEncoder, masked_mean
from luse.model.export import export_encoder, load_encoder, read_export_info

MAX_LENGTH = 16  # short, so the long sentence below is truncated and truncation is checked too
SENTENCES = [
    "今天天气很好",
    "Hello, world!",
    "自然语言处理 is fun, 123",
    "这是一个很长很长的句子，长到超过了训练时的最大长度，所以必须被截断。" * 2,
    "好",
]
ST_FILES = {"modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling"}


def trained_encoder(path: Path, pooling: str, mlp: bool = False, seed: int = 0) -> SentenceEncoder:
    """The tiny model with every weight moved off its initialisation, as training would."""
    encoder = SentenceEncoder.from_pretrained(str(path), pooling=pooling, mlp=mlp, max_length=MAX_LENGTH)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return encoder.eval()


def hf_vectors(out: Path, model_class, pooling: str) -> np.ndarray:
    """Sentence vectors with transformers alone, one padded batch, as the model card says."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = model_class.from_pretrained(out).eval()
    # No max_length: the exported tokenizer must already truncate as training did.
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    assert batch["input_ids"].shape[1] == MAX_LENGTH
    with torch.no_grad():
        output = model(**batch, output_hidden_states=pooling == "first_last_avg")
    if pooling == "pooler":
        vectors = output[1]
    elif pooling == "cls":
        vectors = output[0][:, 0]
    elif pooling == "mean":
        vectors = masked_mean(output[0], batch["attention_mask"])
    else:
        vectors = masked_mean((output.hidden_states[1] + output.hidden_states[-1]) / 2, batch["attention_mask"])
    return vectors.numpy()


def st_vectors(out: Path, sentences=SENTENCES) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(out), device="cpu").encode(list(sentences), convert_to_numpy=True)


def run_model_card_code(out: Path, monkeypatch) -> list[dict]:
    """Execute every ```python block of the exported README.md, from the export's parent directory."""
    blocks = re.findall(r"```python\n(.*?)```", (out / "README.md").read_text(encoding="utf-8"), re.S)
    monkeypatch.chdir(out.parent)
    namespaces = []
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, str(out / "README.md"), "exec"), namespace)
        namespaces.append(namespace)
    return namespaces


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_bert_export_matches_encoder_in_transformers_and_sentence_transformers(
        tiny_bert, tmp_path, pooling, monkeypatch):
    from transformers import BertModel

    encoder = trained_encoder(tiny_bert, pooling)
    expected = encoder.encode(SENTENCES)
    out = export_encoder(encoder, tmp_path / "export")

    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "luse.json", "README.md"} <= names
    assert ST_FILES <= names
    assert ("2_Dense" in names) == (pooling == "pooler")
    np.testing.assert_allclose(hf_vectors(out, BertModel, pooling), expected, atol=1e-5)
    np.testing.assert_allclose(st_vectors(out), expected, atol=1e-5)

    config = json.loads((out / "sentence_bert_config.json").read_text())
    assert config["max_seq_length"] == MAX_LENGTH
    pooling_config = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling_config["word_embedding_dimension"] == encoder.hidden_size
    assert pooling_config["pooling_mode_cls_token"] == (pooling != "mean")
    assert pooling_config["pooling_mode_mean_tokens"] == (pooling == "mean")

    card = (out / "README.md").read_text(encoding="utf-8")
    assert {"pooler": "pooler_output", "cls": "[0][:, 0]", "mean": "mean"}[pooling] in card
    st_run, hf_run = run_model_card_code(out, monkeypatch)
    for namespace in (st_run, hf_run):
        np.testing.assert_allclose(np.asarray(namespace["embeddings"]), encoder.encode(namespace["sentences"]),
                                   atol=1e-5)


def test_pooler_dense_module_holds_the_bert_pooler(tiny_bert, tmp_path):
    from sentence_transformers import SentenceTransformer

    encoder = trained_encoder(tiny_bert, "pooler")
    out = export_encoder(encoder, tmp_path / "export")
    modules = json.loads((out / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Dense"]
    dense = load_file(out / "2_Dense" / "model.safetensors")
    assert torch.equal(dense["linear.weight"], encoder.backbone.pooler.dense.weight)
    assert torch.equal(dense["linear.bias"], encoder.backbone.pooler.dense.bias)

    model = SentenceTransformer(str(out), device="cpu")
    assert model.max_seq_length == MAX_LENGTH
    assert isinstance(model[2].activation_function, torch.nn.Tanh)


def test_first_last_avg_exports_hf_files_only(tiny_bert, tmp_path, caplog, monkeypatch):
    from transformers import BertModel

    encoder = trained_encoder(tiny_bert, "first_last_avg")
    with caplog.at_level(logging.WARNING, logger="luse.model.export"):
        out = export_encoder(encoder, tmp_path / "export")
    assert "Hugging Face files only" in caplog.text

    names = {p.name for p in out.iterdir()}
    assert not names & (ST_FILES | {"2_Dense"})
    assert json.loads((out / "luse.json").read_text())["sentence_transformers"] is False
    np.testing.assert_allclose(hf_vectors(out, BertModel, "first_last_avg"), encoder.encode(SENTENCES),
                               atol=1e-5)

    card = (out / "README.md").read_text(encoding="utf-8")
    assert "hidden_states[1] + output.hidden_states[-1]" in card
    assert "no sentence-transformers modules" in card
    [hf_run] = run_model_card_code(out, monkeypatch)
    np.testing.assert_allclose(hf_run["embeddings"].numpy(), encoder.encode(hf_run["sentences"]), atol=1e-5)


def test_roformer_cls_export_reloads_with_roformer_model(tiny_roformer, tmp_path):
    from transformers import RoFormerModel

    encoder = trained_encoder(tiny_roformer, "cls")
    expected = encoder.encode(SENTENCES)
    out = export_encoder(encoder, tmp_path / "export")
    assert json.loads((out / "config.json").read_text())["model_type"] == "roformer"
    np.testing.assert_allclose(hf_vectors(out, RoFormerModel, "cls"), expected, atol=1e-5)
    np.testing.assert_allclose(st_vectors(out), expected, atol=1e-5)
    assert "RoFormerModel" in (out / "README.md").read_text(encoding="utf-8")


def test_training_mlp_is_never_exported(tiny_bert, tmp_path):
    encoder = trained_encoder(tiny_bert, "pooler", mlp=True)
    encoder.train()  # exporting mid-training must not matter
    out = export_encoder(encoder, tmp_path / "export")

    saved = load_file(out / "model.safetensors")
    assert not [name for name in saved if "mlp" in name]
    backbone_state = encoder.backbone.state_dict()
    assert set(saved) == set(backbone_state)
    for name, tensor in saved.items():
        assert torch.equal(tensor, backbone_state[name]), name
    assert set(load_file(out / "2_Dense" / "model.safetensors")) == {"linear.weight", "linear.bias"}
    # The MLP's weights are nowhere in the directory.
    mlp_weight = encoder.mlp[0].weight.detach()
    for file in out.rglob("*.safetensors"):
        assert not any(t.shape == mlp_weight.shape and torch.equal(t, mlp_weight) for t in load_file(file).values())

    reloaded = load_encoder(out)
    assert reloaded.mlp is None
    np.testing.assert_allclose(reloaded.encode(SENTENCES), encoder.encode(SENTENCES), atol=1e-6)


def test_load_encoder_round_trip_and_metadata(tiny_bert, tmp_path):
    encoder = trained_encoder(tiny_bert, "mean")
    metadata = {
        "config": {"lr": 3e-5, "data": Path("/data/zh.txt"), "augment": ("dropout", "synonym")},
        "stsb_spearman": np.float32(0.5),
        "steps": torch.tensor(1200),
    }
    out = export_encoder(encoder, tmp_path / "export", metadata=metadata)

    info = read_export_info(out)
    assert info["pooling"] == "mean" and info["max_length"] == MAX_LENGTH
    assert info["hidden_size"] == encoder.hidden_size and info["backbone"] == "BertModel"
    assert info["metadata"] == {
        "config": {"lr": 3e-5, "data": "/data/zh.txt", "augment": ["dropout", "synonym"]},
        "stsb_spearman": 0.5,
        "steps": 1200,
    }
    assert "- stsb_spearman: 0.5" in (out / "README.md").read_text(encoding="utf-8")

    reloaded = load_encoder(out)
    assert (reloaded.pooling, reloaded.max_length) == ("mean", MAX_LENGTH)
    np.testing.assert_allclose(reloaded.encode(SENTENCES), encoder.encode(SENTENCES), atol=1e-6)
    assert load_encoder(out, pooling="cls", max_length=8).pooling == "cls"


def test_load_encoder_without_luse_json_uses_defaults(tiny_bert):
    assert read_export_info(tiny_bert) is None
    encoder = load_encoder(tiny_bert)
    assert (encoder.pooling, encoder.max_length, encoder.mlp) == ("pooler", 64, None)


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "luse.json:1: expected valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"pooling": "max"}', "expected pooling one of"),
    ('{"pooling": "cls", "max_length": 0}', "expected max_length a positive integer"),
    ('{"format": 99}', "written by a newer luse"),
])
def test_malformed_luse_json_is_an_input_error(tiny_bert, tmp_path, content, expected):
    out = export_encoder(SentenceEncoder.from_pretrained(str(tiny_bert)), tmp_path / "export")
    (out / "luse.json").write_text(content)
    with pytest.raises(InputError, match=re.escape(expected)):
        load_encoder(out)


def test_export_replaces_an_existing_directory(tiny_bert, tmp_path):
    out = export_encoder(trained_encoder(tiny_bert, "pooler"), tmp_path / "export")
    (out / "stale.txt").write_text("from an older run")
    encoder = trained_encoder(tiny_bert, "mean", seed=1)
    export_encoder(encoder, out)

    names = {p.name for p in out.iterdir()}
    assert "stale.txt" not in names and "2_Dense" not in names
    assert read_export_info(out)["pooling"] == "mean"
    assert os.listdir(tmp_path) == ["export"]  # no temp or old copies left beside it
    np.testing.assert_allclose(load_encoder(out).encode(SENTENCES), encoder.encode(SENTENCES), atol=1e-6)


def test_bad_metadata_fails_before_writing(tiny_bert, tmp_path):
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert))
    with pytest.raises(InputError, match=re.escape("metadata['scores']['sts']: expected a JSON value")):
        export_encoder(encoder, tmp_path / "export", metadata={"scores": {"sts": object()}})
    assert not (tmp_path / "export").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="expected a directory to export into"):
        export_encoder(encoder, tmp_path / "file")


NO_LUSE_CHILD = """
import json, sys
sys.path.extend(sys.argv[2:])
try:
    import luse
except ModuleNotFoundError:
    pass
else:
    raise SystemExit(f"luse is importable from {luse.__file__}")
import torch
from transformers import AutoTokenizer, BertModel

out, sentences = sys.argv[1], json.loads(sys.stdin.read())
tokenizer = AutoTokenizer.from_pretrained(out)
model = BertModel.from_pretrained(out).eval()
batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    vectors = model(**batch)[1]
assert not [name for name in sys.modules if name.split(".")[0] in ("luse", "sentence_transformers")]
print(json.dumps(vectors.tolist()))
"""


def test_export_loads_in_a_python_without_luse(tiny_bert, tmp_path):
    """-I ignores PYTHONPATH and the cwd; -S skips site, so the .pth of the editable luse install never runs."""
    encoder = trained_encoder(tiny_bert, "pooler")
    out = export_encoder(encoder, tmp_path / "export")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", NO_LUSE_CHILD, str(out), *site.getsitepackages()],
        input=json.dumps(SENTENCES), capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    vectors = np.array(json.loads(result.stdout.strip().splitlines()[-1]), dtype=np.float32)
    np.testing.assert_allclose(vectors, encoder.encode(SENTENCES), atol=1e-5)


def test_roformer_fixed_rotary_table_is_not_trained(tiny_roformer):
    # A trainable parameter without gradient makes DDP fail as soon as two processes train.
    encoder = SentenceEncoder.from_pretrained(str(tiny_roformer), pooling="cls")
    frozen = [name for name, p in encoder.named_parameters() if not p.requires_grad]
    assert frozen and all("embed_positions" in name or "pooler" in name for name in frozen)
    assert any("embed_positions" in name for name in frozen)
