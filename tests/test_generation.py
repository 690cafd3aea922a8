"""Generation (luse.eval.generation, luse generate) and pre-generated paraphrases as views (luse.augment.paraphrases)."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from luse.augment.paraphrases import ParaphraseViews
from test_recipes import SENTENCES, launch

from luse.cli.main import main
from luse.config import load_config
from luse.errors import InputError
from luse.eval.generation import (
    candidates,
    decode,
    filter_logits,
    gen_synonyms,
    sample_targets,
    seeded_generator,
    source_ids,
)
from luse.model.seq2seq import Seq2SeqModel, export_seq2seq
from luse.objectives.views import ViewsObjective

TEXT = "科学技术是第一生产力。"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tiny_bert):
    return Seq2SeqModel.from_pretrained(str(tiny_bert), max_length=16).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    return export_seq2seq(model, tmp_path_factory.mktemp("gen") / "model")


def cls_cosine(model, a, b):
    """Cosine of two CLS vectors, each sentence encoded on its own."""
    with torch.no_grad():
        vectors = [model.backbone(**model.tokenizer(t, return_tensors="pt")).last_hidden_state[0, 0] for t in (a, b)]
    return float(F.cosine_similarity(vectors[0], vectors[1], dim=0))


def test_gen_synonyms_returns_k_distinct_ranked(model):
    ranked = gen_synonyms(model, TEXT, n=12, k=5, batch_size=5, max_new_tokens=5, generator=seeded_generator(0))
    texts = [t for t, _ in ranked]
    scores = [s for _, s in ranked]
    assert len(ranked) == 5 and len(set(texts)) == 5 and TEXT not in texts
    assert all(t.strip() and " " not in t for t in texts)  # Chinese characters joined without spaces
    assert scores == sorted(scores, reverse=True)
    for text, score in ranked:
        assert score == pytest.approx(cls_cosine(model, TEXT, text), abs=1e-4)
    again = gen_synonyms(model, TEXT, n=12, k=5, batch_size=5, max_new_tokens=5, generator=seeded_generator(0))
    assert again == ranked  # seeded sampling is reproducible


@pytest.mark.parametrize("kind", ["bert", "roformer"])
def test_cached_decoding_matches_full_recomputation(kind, tiny_bert, tiny_roformer):
    model = Seq2SeqModel.from_pretrained(str(tiny_bert if kind == "bert" else tiny_roformer), max_length=16).eval()
    with torch.no_grad():  # make [SEP] likely, so that rows finish at different steps (and leave the cache)
        model.lm_head.predictions.bias[model.tokenizer.sep_token_id] = 9.0
    prompt = source_ids(model.tokenizer, TEXT, 16, [3])
    runs = [sample_targets(model, prompt, 10, top_p=0.95, top_k=0, temperature=1.0, batch_size=6, max_new_tokens=8,
                           generator=seeded_generator(3), use_cache=cache) for cache in (False, True)]
    assert runs[0] == runs[1]
    assert len({len(s) for s in runs[0]}) > 2  # some stopped early, some ran on


def test_gen_synonyms_drops_input_and_duplicates(model, monkeypatch):
    import luse.eval.generation as generation

    tok = model.tokenizer
    own = tok("今天天气很好", add_special_tokens=False)["input_ids"]
    other = tok("明天下雨", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(generation, "sample_targets", lambda *a, **k: [own, other, other, own, []])
    ranked = gen_synonyms(model, "今天天气很好", n=5, k=5)
    assert [t for t, _ in ranked] == ["明天下雨"]


def test_mask_idxs_are_masked_in_the_prompt(model, monkeypatch):
    tok = model.tokenizer
    ids = source_ids(tok, TEXT, 16, [6, 7])
    plain = source_ids(tok, TEXT, 16)
    assert tok.convert_ids_to_tokens(plain[6:8]) == ["第", "一"]  # the seed's example: [6, 7] masks 第一
    assert ids[6] == ids[7] == tok.mask_token_id and ids[:6] == plain[:6] and ids[8:] == plain[8:]
    seen = []
    original = model.seq2seq_step

    def spy(input_ids, token_type_ids, cache):
        seen.append(input_ids.clone())
        return original(input_ids, token_type_ids, cache)

    monkeypatch.setattr(model, "seq2seq_step", spy)
    gen_synonyms(model, TEXT, n=2, k=2, mask_idxs=[6, 7], max_new_tokens=2, generator=seeded_generator(1))
    assert torch.equal(seen[0], torch.tensor([ids] * 2))  # the first step reads the masked prompt
    with pytest.raises(InputError, match="mask_idxs"):
        source_ids(tok, TEXT, 16, [0])
    with pytest.raises(InputError, match="mask_idxs"):
        source_ids(tok, TEXT, 16, [len(plain) - 1])


def test_filter_logits_matches_direct_selection():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    top_k = filter_logits(logits, top_k=5)
    for row in range(4):
        kept = set(torch.isfinite(top_k[row]).nonzero().flatten().tolist())
        assert kept == set(logits[row].argsort(descending=True)[:5].tolist())
    top_p = filter_logits(logits, top_p=0.6)
    probs = logits.softmax(-1)
    for row in range(4):
        order = probs[row].argsort(descending=True).tolist()
        keep, mass = [], 0.0
        for token in order:  # the smallest prefix whose mass reaches top_p
            keep.append(token)
            mass += float(probs[row, token])
            if mass >= 0.6:
                break
        assert set(torch.isfinite(top_p[row]).nonzero().flatten().tolist()) == set(keep)


@pytest.mark.parametrize("scale, top_k, top_p", [(8.0, 0, 0.9), (0.1, 0, 0.9), (1.0, 5, 0.95), (1.0, 5, 1.0),
                                                  (1.0, 100, 0.9), (8.0, 0, 1.0)])
def test_candidates_match_filter_logits(scale, top_k, top_p):
    """The fast path (nucleus inside the best 64 tokens) and the fallback give filter_logits' distribution."""
    torch.manual_seed(0)
    logits = torch.randn(3, 1000) * scale
    ids, weights = candidates(logits, top_k, top_p)
    dense = weights if ids is None else torch.zeros_like(logits).scatter(-1, ids, weights)
    expected = filter_logits(logits, top_k, top_p).softmax(-1)
    assert torch.allclose(dense / dense.sum(-1, keepdim=True), expected, atol=1e-6)
    assert (ids is not None) == (scale == 8.0 and top_p < 1 or top_k == 5)  # which path ran


def test_decode_joins_characters(model):
    tok = model.tokenizer
    assert decode(tok, tok("深圳和广州，哪个好？", add_special_tokens=True)["input_ids"]) == "深圳和广州，哪个好？"

    class WordPieces:  # a vocabulary with English words and ## pieces
        all_special_ids = [0]
        vocab = ["[PAD]", "我", "爱", "new", "york", "##er", "2", "。"]

        def convert_ids_to_tokens(self, ids):
            return [self.vocab[i] for i in ids]

    assert decode(WordPieces(), [1, 2, 3, 4, 5, 0, 6, 7]) == "我爱new yorker 2。"


def test_cli_json(exported, capsys):
    code = main(["generate", str(exported), TEXT, "-n", "6", "-k", "3", "--json", "--seed", "0",
                 "--max-length", "6", "--mask-idxs", "2,3"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, list) and 1 <= len(out) <= 3
    assert all(set(item) == {"text", "score"} and isinstance(item["text"], str) for item in out)
    assert [i["score"] for i in out] == sorted((i["score"] for i in out), reverse=True)
    assert main(["generate", str(exported), TEXT, "--mask-idxs", "0", "-n", "2", "--max-length", "6"]) == 2
    assert "mask_idxs" in capsys.readouterr().err


def test_generate_file_feeds_paraphrase_views(exported, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("今天天气很好。\n\n猫坐在窗台上。\n", encoding="utf-8")
    out = tmp_path / "para.jsonl"
    assert main(["generate", str(exported), "--in", str(source), "--out", str(out), "-n", "6", "-k", "3",
                 "--max-length", "6", "--seed", "0"]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == ["今天天气很好。", "猫坐在窗台上。"]
    assert all(1 <= len(r["views"]) <= 3 and len(r["scores"]) == len(r["views"]) for r in records)
    views = ParaphraseViews(out)
    picked = views("猫坐在窗台上。", 2, random.Random(0))
    assert len(picked) == 2 and all(p in records[1]["views"] or p == "猫坐在窗台上。" for p in picked)


def test_paraphrase_views_lookup(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "甲", "views": ["甲一", "甲二", "甲三", "甲"]}\n{"text": "乙", "views": ["乙一"]}\n'
                    '{"text": "甲", "views": ["甲四"]}\n', encoding="utf-8")
    views = ParaphraseViews(path)
    rng = random.Random(0)
    picked = views("甲", 3, rng)
    assert len(set(picked)) == 3 and set(picked) <= {"甲一", "甲二", "甲三", "甲四"}  # no repeats, never itself
    assert sorted(views("甲", 4, rng)) == ["甲一", "甲三", "甲二", "甲四"]
    assert views("乙", 3, rng)[1:] == ["乙", "乙"] and views.short == 1  # short: filled with the sentence
    assert views("丙", 2, rng) == ["丙", "丙"] and views.misses == 1  # unknown: dropout views
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "甲", "views": ["a"]}\n{"text": "乙", "views": "乙一"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.jsonl:2: expected a JSON object"):
        ParaphraseViews(bad)


def test_views_objective_with_generated_views(model, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "今天天气很好", "views": ["今天天气不错", "天气很好"]}\n', encoding="utf-8")
    config = load_config(None, ["views.dropout=1", "views.generated=2", f"views.paraphrases={path}"])
    objective = ViewsObjective(model.tokenizer, 16, config.views, config.loss, paraphraser=ParaphraseViews(path))
    assert objective.num_views == 4
    batch = objective.collate(["今天天气很好", "猫"], random.Random(0))
    rows = [decode(model.tokenizer, ids) for ids in batch["input_ids"].tolist()]
    assert rows[0] == rows[3] == "今天天气很好" and set(rows[1:3]) == {"今天天气不错", "天气很好"}
    assert rows[4:] == ["猫"] * 4  # unknown sentence: itself, i.e. dropout views
    with pytest.raises(InputError, match="views.paraphrases"):
        load_config(None, ["views.generated=2"])


@pytest.mark.slow
def test_pretrain_luse_with_generated_views(tmp_path, tiny_bert):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    para = tmp_path / "para.jsonl"
    para.write_text("".join(json.dumps({"text": s, "views": [s[1:], s[:-1]]}, ensure_ascii=False) + "\n"
                            for s in SENTENCES), encoding="utf-8")
    result = launch("pretrain_luse", [f"output_dir={tmp_path / 'out'}", "max_steps=2", "batch_size=4",
                                      f"model.name_or_path={tiny_bert}", f"data.corpus=[{corpus}]",
                                      "data.min_chars=2", "views.dropout=1", "views.eda=0", "views.generated=2",
                                      f"views.paraphrases={para}", "report_to=none", "eval.every=0"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"paraphrases: {len(SENTENCES)} texts" in result.stderr
    assert "is not in" not in result.stderr  # every corpus sentence found its paraphrases
    assert (tmp_path / "out" / "final" / "model.safetensors").exists()


def test_cli_refuses_a_model_without_an_lm_head(tiny_bert, capsys):
    # tiny_bert is a plain BertModel, like any sentence-encoder export: a new random head would write noise
    code = main(["generate", str(tiny_bert), TEXT, "-n", "2", "-k", "1", "--max-length", "6"])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "LM head" in lines[0] and str(tiny_bert) in lines[0], captured.err


@pytest.mark.parametrize("kind", ["bert", "roformer"])
def test_checkpoint_has_lm_head_from_weight_names(kind, tiny_bert, tiny_roformer, tmp_path):
    from luse.model.seq2seq import checkpoint_has_lm_head

    encoder = tiny_bert if kind == "bert" else tiny_roformer
    assert checkpoint_has_lm_head(encoder) is False
    generator = export_seq2seq(Seq2SeqModel.from_pretrained(str(encoder), max_length=8), tmp_path / "g")
    assert checkpoint_has_lm_head(generator) is True
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text((encoder / "config.json").read_text())
    assert checkpoint_has_lm_head(tmp_path / "plain") is None  # no weights to read the names of
