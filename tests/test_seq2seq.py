"""RoFormer-Sim (luse.model.seq2seq): UniLM mask, BART noise, the loss against a direct computation,
the export, and a 2-step `accelerate launch recipes/roformer_sim.py` with BERT and RoFormer."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from test_recipes import launch

from luse.data.supervised import read_similar_pairs
from luse.errors import InputError
from luse.model.seq2seq import (
    Seq2SeqModel,
    bart_noise,
    export_seq2seq,
    extended_mask,
    lm_targets,
    load_seq2seq,
    pack_pairs,
    unilm_attention_mask,
)
from luse.objectives.roformer_sim import RoFormerSimObjective

PAIRS = [("广州和深圳哪个好？", "深圳和广州哪个好？"), ("科学技术是第一生产力。", "科技是第一生产力。"),
         ("今天天气很好。", "今天的天气不错。"), ("我想学游泳。", "怎么学游泳？"),
         ("这家店的咖啡不错。", "这家咖啡店味道很好。"), ("火车晚点了。", "列车晚点了半小时。")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def plain_generator_outputs(final, mlm_class, base_class, text: str = "今天天气很好"):
    """An exported generator read with plain transformers: (tokenizer, batch, MLM logits, [CLS] vector)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(final)
    batch = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        logits = mlm_class.from_pretrained(final).eval()(**batch).logits
        vector = base_class.from_pretrained(final).eval()(**batch)[0][:, 0]
    return tokenizer, batch, logits, vector


@pytest.fixture(scope="module", params=["bert", "roformer"])
def model(request, tiny_bert, tiny_roformer):
    path = tiny_bert if request.param == "bert" else tiny_roformer
    return Seq2SeqModel.from_pretrained(str(path), max_length=16).eval()


def naive_mask(types, attention):
    """Straight from the definition: source rows see the whole source; target row i sees the source
    and target positions <= i; no row sees padding."""
    batch, length = types.shape
    allowed = torch.zeros(batch, length, length, dtype=torch.bool)
    for b in range(batch):
        for i in range(length):
            for j in range(length):
                if not attention[b, j]:
                    continue
                if types[b, j] == 0:
                    allowed[b, i, j] = True
                else:
                    allowed[b, i, j] = bool(types[b, i] == 1) and j <= i
    return allowed


def test_unilm_mask_matches_direct_construction():
    rng = random.Random(0)
    rows = [([1] * rng.randint(2, 6), [2] * rng.randint(1, 6)) for _ in range(8)]
    batch = pack_pairs(rows, pad_id=0)
    types, attention = batch["token_type_ids"], batch["attention_mask"]
    mask = unilm_attention_mask(types, attention)
    expected = naive_mask(types, attention)
    real = attention.bool()[:, :, None]  # rows of padding queries are never read
    assert torch.equal(mask & real, expected & real)
    # the source never sees the target; the target sees the source and its own past only
    first = rows[0]
    n, m = len(first[0]), len(first[1])
    assert not mask[0, :n, n:].any() and mask[0, :n, :n].all()
    assert torch.equal(mask[0, n:n + m, n:n + m], torch.ones(m, m, dtype=torch.bool).tril())


def test_extended_mask_is_applied(model):
    """Source states must not depend on the target; a target state not on later target tokens."""
    tok = model.tokenizer
    source = tok("科学技术是第一生产力", add_special_tokens=False)["input_ids"]
    target_a = tok("科技是第一生产力", add_special_tokens=False)["input_ids"]
    target_b = target_a[:3] + tok("北京上海广州", add_special_tokens=False)["input_ids"][:len(target_a) - 3]
    rows = [([tok.cls_token_id, *source, tok.sep_token_id], [*t, tok.sep_token_id]) for t in (target_a, target_b)]
    batch = pack_pairs(rows, tok.pad_token_id)
    with torch.no_grad():
        hidden = model.seq2seq_hidden(**batch)
        plain = model.backbone(**batch).last_hidden_state
    n = len(source) + 2
    assert torch.allclose(hidden[0, :n], hidden[1, :n], atol=1e-5)
    assert torch.allclose(hidden[0, :n + 3], hidden[1, :n + 3], atol=1e-5)  # targets agree up to token 3
    assert not torch.allclose(hidden[0, n + 3:], hidden[1, n + 3:], atol=1e-3)
    # without the UniLM mask the source does see the target: the mask really changed something
    assert not torch.allclose(plain[0, :n], plain[1, :n], atol=1e-3)
    # the mask form matches the attention implementation (bool for SDPA, additive for eager)
    ext = extended_mask(unilm_attention_mask(batch["token_type_ids"], batch["attention_mask"]), model.backbone)
    assert ext.shape == (2, 1, batch["input_ids"].shape[1], batch["input_ids"].shape[1])


def test_lm_head_tied_and_new_head_logged(tiny_roformer, caplog):
    with caplog.at_level("WARNING", logger="luse"):
        model = Seq2SeqModel.from_pretrained(str(tiny_roformer))
    assert model.new_lm_head and "has no LM head: started a new one" in caplog.text
    assert model.lm_head.predictions.decoder.weight is model.backbone.embeddings.word_embeddings.weight


def direct_loss(model, batch, contrastive_weight, temperature):
    """LM loss by running every target prefix on its own (no padding, no batching), plus SimBERT's
    contrastive loss written out: each of the 2B CLS vectors must pick its partner among the other 2B-1."""
    losses, cls = [], []
    for row in range(batch["input_ids"].shape[0]):
        real = batch["attention_mask"][row].bool()
        ids, types = batch["input_ids"][row][real], batch["token_type_ids"][row][real]
        start = int((types == 0).sum())
        for t in range(start, len(ids)):  # predict ids[t] from ids[:t]
            prefix = {"input_ids": ids[None, :t], "token_type_ids": types[None, :t],
                      "attention_mask": torch.ones(1, t, dtype=torch.long)}
            hidden = model.seq2seq_hidden(**prefix)
            losses.append(-F.log_softmax(model.lm_head(hidden[0, -1]), -1)[ids[t]])
        source = {"input_ids": ids[None, :start], "attention_mask": torch.ones(1, start, dtype=torch.long),
                  "token_type_ids": types[None, :start]}
        cls.append(model.backbone(**source).last_hidden_state[0, 0])
    lm = torch.stack(losses).mean()
    z = F.normalize(torch.stack(cls), dim=-1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    partner = torch.arange(len(z)) ^ 1  # rows 2i and 2i+1 are a -> b and b -> a
    return lm + contrastive_weight * F.cross_entropy(logits, partner)


def test_loss_matches_direct_computation(model):
    objective = RoFormerSimObjective(model.tokenizer, 16, mask_rate=0.3, contrastive_weight=0.5,
                                     temperature=0.1, gather=False)
    batch = objective.collate(PAIRS[:3], random.Random(1))
    with torch.no_grad():
        got = objective.model_loss(model, batch, batch)
        expected = direct_loss(model, batch, 0.5, 0.1)
    assert torch.allclose(got, expected, atol=1e-4), (got, expected)


def test_every_trainable_parameter_gets_a_gradient(model):
    """What DDP requires of one training step (RoFormer's fixed sinusoid table is frozen)."""
    objective = RoFormerSimObjective(model.tokenizer, 16, gather=False)
    batch = objective.collate(PAIRS[:2], random.Random(0))
    model.zero_grad(set_to_none=True)
    objective.model_loss(model, batch, batch).backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)
    assert not missing


@pytest.mark.parametrize("kind", ["bert", "roformer"])
def test_training_then_generation_reproduces_targets(kind, tiny_bert, tiny_roformer):
    """Train and generate agree on the UniLM layout: after fitting a few pairs, greedy generation
    from each source writes its target."""
    from luse.eval.generation import gen_synonyms

    torch.manual_seed(0)
    model = Seq2SeqModel.from_pretrained(str(tiny_bert if kind == "bert" else tiny_roformer), max_length=16)
    pairs = [PAIRS[1], PAIRS[2], PAIRS[5]]
    objective = RoFormerSimObjective(model.tokenizer, 16, mask_rate=0.0, contrastive_weight=0.0, gather=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = objective.collate(pairs, random.Random(0))
    model.train()
    for _ in range(200):
        loss = objective.model_loss(model, batch, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    for source, target in pairs:
        assert gen_synonyms(model, source, n=1, k=1, top_k=1)[0][0] == target
        assert gen_synonyms(model, target, n=1, k=1, top_k=1)[0][0] == source


def test_collate_orders_and_noise(model):
    tok = model.tokenizer
    objective = RoFormerSimObjective(tok, 16, mask_rate=0.5)
    batch = objective.collate(PAIRS, random.Random(0))
    assert batch["input_ids"].shape[0] == 2 * len(PAIRS)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    masked = total = 0
    for row in range(batch["input_ids"].shape[0]):
        a, b = PAIRS[row // 2] if row % 2 == 0 else PAIRS[row // 2][::-1]
        real = batch["attention_mask"][row].bool()
        seq, types = batch["input_ids"][row][real].tolist(), batch["token_type_ids"][row][real]
        n = int((types == 0).sum())
        assert seq[0] == tok.cls_token_id and seq[n - 1] == tok.sep_token_id and seq[-1] == tok.sep_token_id
        assert seq[n:-1] == ids(b)  # the target is clean
        source = seq[1:n - 1]
        assert all(s in (t, tok.mask_token_id) for s, t in zip(source, ids(a), strict=True))
        masked += sum(s == tok.mask_token_id for s in source)
        total += len(source)
    assert 0.25 < masked / total < 0.75
    assert bart_noise([5, 6, 7], 0.0, 4, random.Random(0)) == [5, 6, 7]
    predict, targets = lm_targets(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    assert int(predict.sum()) == len(targets) == int(((batch["token_type_ids"] == 1)).sum())


def test_read_similar_pairs(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text('{"text1": "甲", "text2": "乙"}\n\n{"a": "丙", "b": "丁", "x": 1}\n', encoding="utf-8")
    assert list(read_similar_pairs(jsonl)) == [("甲", "乙"), ("丙", "丁")]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("甲\t乙\n丙\t丁\n", encoding="utf-8")
    assert list(read_similar_pairs(tsv)) == [("甲", "乙"), ("丙", "丁")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("甲\t乙\n丙\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.tsv:2: expected 2 tab-separated"):
        list(read_similar_pairs(bad))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text1": "甲"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:1: expected a JSON object"):
        list(read_similar_pairs(bad_json))


def test_export_loads_with_plain_transformers(model, tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    out = export_seq2seq(model, tmp_path / "export", metadata={"step": 1})
    batch = pack_pairs([([2, 10, 11, 3], [12, 3])], model.tokenizer.pad_token_id)
    sentence = model.tokenize(["今天天气很好"])
    with torch.no_grad():
        _, ours = model(**batch, seq2seq=True)
        our_cls = model(**sentence)
        mlm = AutoModelForMaskedLM.from_pretrained(out).eval()
        mask = extended_mask(unilm_attention_mask(batch["token_type_ids"], batch["attention_mask"]), mlm.base_model)
        theirs = mlm(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=mask).logits
        assert torch.allclose(ours, theirs, atol=1e-5)
        plain = AutoModel.from_pretrained(out).eval()
        assert type(plain).__name__ in ("BertModel", "RoFormerModel")
        assert torch.allclose(plain(**sentence)[0][:, 0], our_cls, atol=1e-5)
        causal = AutoModelForCausalLM.from_pretrained(out)
        assert torch.equal(causal.get_output_embeddings().weight, mlm.get_output_embeddings().weight)
    info = json.loads((out / "luse.json").read_text())
    assert info["pooling"] == "cls" and info["max_length"] == 16 and info["metadata"] == {"step": 1}
    again = load_seq2seq(out)
    assert not again.new_lm_head and again.max_length == 16


def test_objective_rejects_bad_rate():
    with pytest.raises(InputError, match="mask_rate"):
        RoFormerSimObjective(None, 16, mask_rate=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert", "roformer"])
def test_recipe_launch(kind, tmp_path, tiny_bert, tiny_roformer):
    from transformers import BertForMaskedLM, BertModel, RoFormerForMaskedLM, RoFormerModel

    path = tiny_bert if kind == "bert" else tiny_roformer
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"text1": a, "text2": b}, ensure_ascii=False) + "\n" for a, b in PAIRS),
                    encoding="utf-8")
    sts = tmp_path / "sts.tsv"
    sts.write_text("".join(f"{a}\t{b}\t{i % 3}\n" for i, (a, b) in enumerate(PAIRS)), encoding="utf-8")
    out = tmp_path / "out"
    result = launch("roformer_sim", [f"output_dir={out}", "max_steps=2", "batch_size=3", f"model.name_or_path={path}",
                                     "model.max_length=16", f"data.corpus=[{data}]", f"eval.sts=[{sts}]",
                                     "eval.every=1", "save_every=1", "report_to=none"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "has no LM head: started a new one" in result.stderr
    final = out / "final"
    mlm_class, base_class = (BertForMaskedLM, BertModel) if kind == "bert" else (RoFormerForMaskedLM, RoFormerModel)
    tokenizer, _, logits, vector = plain_generator_outputs(final, mlm_class, base_class)
    assert logits.shape[-1] == tokenizer.vocab_size and torch.isfinite(logits).all()
    assert vector.shape == (1, 32) and torch.isfinite(vector).all()
    assert (out / "checkpoints" / "step-00000002").is_dir()
    trained = load_seq2seq(final)
    assert not trained.new_lm_head


@pytest.fixture
def library_log(caplog):
    """Warnings of luse, transformers (which does not propagate) and accelerate, as records."""
    import logging

    loggers = [logging.getLogger(name) for name in ("luse", "transformers")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


NOISE = ("seem corrupted", "LOAD REPORT", "Removed shared tensor", "were not sharded", "past_key_values")


def test_roformer_sim_distill_and_generate_load_and_save_quietly(tmp_path, tiny_bert, library_log, capsys):
    """Training RoFormer-Sim from an encoder, resuming it, distilling a generator and generating print none
    of transformers' / accelerate's notices about the tied LM head (issue 16, case 14); luse's own line
    about the new head stays, and the tie survives checkpoints."""
    import warnings

    from conftest import recipe_main

    from luse.cli.main import main
    from luse.train.outcome import exit_code

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"text1": a, "text2": b}, ensure_ascii=False) + "\n" for a, b in PAIRS * 2),
                     encoding="utf-8")
    out, student = tmp_path / "sim", tmp_path / "student"
    common = ["batch_size=3", "model.max_length=16", "eval.every=0", "save_every=1", "report_to=none"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = [f"output_dir={out}", f"model.name_or_path={tiny_bert}", f"data.corpus=[{pairs}]", *common]
        assert exit_code("roformer_sim", recipe_main("roformer_sim"), [*train, "max_steps=2"]) == 0
        assert exit_code("roformer_sim", recipe_main("roformer_sim"), [*train, "max_steps=3", "resume=latest"]) == 0
        assert exit_code("distill", recipe_main("distill"),
                         [f"output_dir={student}", f"distill.teacher={out / 'final'}", "distill.student_layers=1",
                          f"distill.pairs={pairs}", "distill.lm_weight=1", "model.pooling=cls", "max_steps=2",
                          *common]) == 0
        assert main(["generate", str(student / "final"), "今天天气很好", "-n", "4", "-k", "2"]) == 0
    said = [r.getMessage() for r in library_log.records] + [str(w.message) for w in caught]
    said += capsys.readouterr().err.splitlines()
    assert not [line for line in said if any(noise in line for noise in NOISE)], said
    assert any("has no LM head: started a new one" in line for line in said)  # ours stays
    trained = load_seq2seq(out / "final")  # resumed from a checkpoint saved without the tied copies
    assert trained.lm_head.predictions.decoder.weight is trained.backbone.embeddings.word_embeddings.weight


def test_unexpected_keys_are_still_reported_by_our_loader(tmp_path, tiny_bert, library_log):
    """What the quiet load drops is only what is expected: a backbone weight missing from the checkpoint is named."""
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for path in tiny_bert.iterdir():
        if path.is_file() and path.name != "model.safetensors":
            (broken / path.name).write_bytes(path.read_bytes())
    weights = load_file(str(tiny_bert / "model.safetensors"))
    lost = next(name for name in weights if name.endswith("intermediate.dense.weight"))
    save_file({k: v for k, v in weights.items() if k != lost}, str(broken / "model.safetensors"),
              metadata={"format": "pt"})
    Seq2SeqModel.from_pretrained(str(broken))
    said = [r.getMessage() for r in library_log.records]
    assert any("1 weights missing from the checkpoint, initialised at random" in m and lost.split(".", 1)[-1] in m
               for m in said), said
    assert not [m for m in said if "LOAD REPORT" in m or "seem corrupted" in m], said
