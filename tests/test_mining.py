"""Pair mining: planted near-duplicates are all found, nothing below the threshold comes out, blocking
checks far fewer candidates than all pairs, and the CLI writes files the pair readers accept."""

from __future__ import annotations

import json
import random
from itertools import combinations, islice

import numpy as np
import pytest

from luse.cli.main import main
from luse.errors import InputError
from luse.mining import (
    ANSWERS,
    DOCUMENTS,
    Group,
    MinHasher,
    PairMiner,
    jaccard,
    lsh_params,
    read_groups,
    shingles,
)
from luse.mining.pairs import candidate_probability

CHARS = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def random_sentence(rng: random.Random, length: int = 20) -> str:
    return "".join(rng.choice(CHARS) for _ in range(length))


def near_copy(rng: random.Random, sentence: str, changes: int) -> str:
    chars = list(sentence)
    for position in rng.sample(range(len(chars)), changes):
        chars[position] = rng.choice(CHARS)
    return "".join(chars)


def brute_force(groups: list[Group], miner: PairMiner) -> set[tuple[str, str]]:
    """Every pair above its scheme's threshold, by comparing all pairs of each group."""
    found = set()
    for group in groups:
        rows = miner.sentences(group)
        threshold = miner.stats[group.scheme].threshold
        for (part1, s1, g1), (part2, s2, g2) in combinations(rows, 2):
            if group.scheme == ANSWERS and part1 == part2:
                continue
            if jaccard(g1, g2) >= threshold:
                found.add(tuple(sorted((s1, s2))))
    return found


def document(sentences: list[str]) -> str:
    return "".join(sentence + "。" for sentence in sentences)


def synthetic_documents(seed: int, documents: int, sentences: int, planted: int) -> tuple[list[Group], set]:
    """Random documents; ``planted`` sentences per document get a near copy (1-3 of 20 characters changed)."""
    rng = random.Random(seed)
    groups, pairs = [], set()
    for d in range(documents):
        texts = [random_sentence(rng) for _ in range(sentences)]
        for original in rng.sample(texts, planted):
            copy = near_copy(rng, original, rng.randint(1, 3))
            texts.insert(rng.randrange(len(texts) + 1), copy)
            pairs.add(tuple(sorted((original + "。", copy + "。"))))  # the splitter keeps the full stop
        groups.append(Group(DOCUMENTS, f"doc{d}", [document(texts)]))
    return groups, pairs


def mined_set(miner: PairMiner, groups: list[Group]) -> dict[tuple[str, str], float]:
    return {tuple(sorted((p.text1, p.text2))): p.score for p in miner.mine(groups)}


# ------------------------------------------------------------------------------ building blocks


def test_shingles_and_jaccard_ignore_punctuation_and_order():
    a, b = shingles("深圳和广州哪个好？"), shingles("广州和深圳哪个好")
    assert a == b and jaccard(a, b) == 1.0
    assert jaccard(shingles("abcd"), shingles("abxy")) == pytest.approx(2 / 6)
    assert shingles("今天天气", ngram=2) == {"今天", "天天", "天气"}
    assert shingles("，。！") == frozenset()


def test_minhash_agreement_estimates_jaccard():
    rng = random.Random(0)
    hasher = MinHasher(num_perm=256, seed=3)
    base = random_sentence(rng, 40)
    sets = [shingles(base)] + [shingles(near_copy(rng, base, k)) for k in (2, 8, 16, 30)]
    signatures = hasher.signatures(sets, block=50)  # a small block: several blocks, same result
    assert np.array_equal(signatures, hasher.signatures(sets))
    for i in range(1, len(sets)):
        estimate = float((signatures[0] == signatures[i]).mean())
        assert abs(estimate - jaccard(sets[0], sets[i])) < 0.1


def test_lsh_params_put_the_s_curve_at_the_threshold():
    for threshold in (0.5, 0.7, 0.9):
        bands, rows = lsh_params(threshold, 128)
        assert bands * rows <= 128
        assert candidate_probability(threshold, bands, rows) > 0.98
        assert candidate_probability(threshold - 0.35, bands, rows) < 0.15


# ------------------------------------------------------------------------------ mining


def test_scheme_2_finds_all_planted_pairs_and_nothing_below_threshold():
    groups, planted = synthetic_documents(seed=1, documents=30, sentences=25, planted=3)
    miner = PairMiner(document_threshold=0.7, min_chars=5)
    found = mined_set(miner, groups)
    assert planted <= set(found)
    assert set(found) == brute_force(groups, miner)  # LSH lost nothing on this corpus
    assert all(score >= 0.7 for score in found.values())
    for (a, b), score in found.items():
        assert score == round(jaccard(shingles(a), shingles(b)), 4)
    stats = miner.stats[DOCUMENTS]
    assert stats.pairs == len(found) and stats.groups == 30 and stats.sentences == 30 * 28
    assert stats.candidates >= stats.pairs and stats.all_pairs == 30 * 28 * 27 // 2


def test_scheme_1_pairs_only_across_answers_of_one_question():
    rng = random.Random(2)
    shared = random_sentence(rng)
    across = near_copy(rng, shared, 2)  # in another answer to the same question: a pair
    within = random_sentence(rng)
    other_question = near_copy(rng, shared, 1)  # near copy, but under another question: no pair
    groups = [
        Group(ANSWERS, "q1", [document([shared, within, near_copy(rng, within, 1)]),
                              document([random_sentence(rng), across])]),
        Group(ANSWERS, "q2", [document([other_question, random_sentence(rng)]), document([random_sentence(rng)])]),
    ]
    miner = PairMiner(answer_threshold=0.5)
    found = mined_set(miner, groups)
    assert set(found) == {tuple(sorted((shared + "。", across + "。")))}
    assert set(found) == brute_force(groups, miner)
    assert miner.stats[ANSWERS].all_pairs == 3 * 2 + 2 * 1


def test_blocking_checks_far_fewer_candidates_than_all_pairs():
    groups, planted = synthetic_documents(seed=3, documents=1, sentences=3000, planted=40)
    miner = PairMiner(document_threshold=0.7)
    found = mined_set(miner, groups)
    stats = miner.stats[DOCUMENTS]
    n = stats.sentences
    assert n == 3040 and planted <= set(found)
    assert stats.candidates < 0.001 * n * (n - 1) / 2, stats


def test_negatives_come_from_another_group():
    groups, _ = synthetic_documents(seed=4, documents=10, sentences=10, planted=2)
    miner = PairMiner(negatives=True, seed=5)
    where = {s + "。": g.key for g in groups for s in g.texts[0].rstrip("。").split("。")}
    pairs = list(miner.mine(groups))
    assert len(pairs) >= 20
    for pair in pairs:
        assert pair.negative is not None and where[pair.negative] != where[pair.text1]


def test_peoples_daily_reads_as_untagged_paragraphs():
    groups = list(islice(read_groups(["peoples-daily"]), 3))
    assert [g.scheme for g in groups] == [DOCUMENTS] * 3
    assert groups[0].texts == ["迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"]


# ------------------------------------------------------------------------------ command line


@pytest.fixture
def inputs(tmp_path):
    groups, planted = synthetic_documents(seed=6, documents=8, sentences=12, planted=2)
    docs = tmp_path / "docs.txt"
    docs.write_text("\n".join(g.texts[0] for g in groups) + "\n", encoding="utf-8")
    rng = random.Random(7)
    base = random_sentence(rng)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"question": "哪个好？", "answers": [base + "。" + random_sentence(rng) + "。", random_sentence(rng) + "。"]},
        {"qid": 7, "answer": random_sentence(rng) + "。"},
        {"question": "哪个好？", "answer": near_copy(rng, base, 2) + "。"},
        {"text": document([near_copy(rng, base, 1), random_sentence(rng)])},
    ]) + "\n", encoding="utf-8")
    return {"docs": docs, "answers": answers, "planted": planted, "base": base}


def test_cli_writes_pairs_the_readers_accept(tmp_path, inputs, capsys):
    from luse.data.supervised import read_pairs, read_triplets

    out, summary = tmp_path / "pairs.jsonl", tmp_path / "summary.json"
    code = main(["mine-pairs", "--in", str(inputs["docs"]), str(inputs["answers"]), "--out", str(out),
                 "--summary", str(summary)])
    assert code == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(set(r) == {"text1", "text2", "score", "scheme"} for r in records)
    assert {tuple(sorted((r["text1"], r["text2"]))) for r in records if r["scheme"] == 2} >= inputs["planted"]
    assert [r for r in records if r["scheme"] == 1] and all(r["score"] >= 0.5 for r in records)
    assert len(list(read_pairs(out))) == len(records)
    counts = json.loads(summary.read_text())["schemes"]
    assert counts["1"]["pairs"] == 1 and counts["2"]["pairs"] == len(records) - 1
    err = capsys.readouterr().err
    assert "answers (scheme 1): 1 pairs" in err and "candidates checked" in err

    with_negatives = tmp_path / "triplets.jsonl"
    assert main(["mine-pairs", "--in", str(inputs["docs"]), "--out", str(with_negatives), "--negatives"]) == 0
    assert len(list(read_triplets(with_negatives))) == len(inputs["planted"])
    with pytest.raises(InputError, match="simcse_sup"):  # triplets are simcse_sup's, not scored pairs for cosent
        list(read_pairs(with_negatives))
    try:
        from luse.data.supervised import read_similar_pairs
    except ImportError:  # the RoFormer-Sim recipe is another module; check it when present
        return
    assert len(list(read_similar_pairs(out))) == len(records)


@pytest.mark.parametrize("line, expected", [
    ('{"question": "q", "answers": "not a list"}', "answers.jsonl:2: expected a JSON object"),
    ("not json", "answers.jsonl:2: expected a JSON object"),
    ('{"txt": "wrong key"}', "answers.jsonl:2: expected a JSON object with a string \"text\""),
])
def test_bad_input_line_is_one_line_error(tmp_path, capsys, line, expected):
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"text": "一个好句子。另一个句子。"}\n' + line + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["mine-pairs", "--in", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("luse: error: ") and expected in err[0]
    assert not out.exists()  # atomic: nothing half-written


def test_existing_output_survives_a_failed_run(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("old\n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_bytes("好句子一个。好句子两个。\n".encode() + b"\xff\xfe broken\n")
    assert main(["mine-pairs", "--in", str(bad), "--out", str(out)]) == 2
    assert "bad.txt:2: expected UTF-8 text" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "old\n"


# ------------------------------------------------------------------------------ corpus-wide (scheme 3)

# Near-duplicate customer-service questions (character Jaccard >= 0.7), each pair on two separate lines.
QUESTION_PAIRS = [
    ("我的订单什么时候发货", "我的订单什么时候发货啊？"),
    ("优惠券为什么用不了", "优惠券为什么不能用"),
    ("快递到哪里了", "我的快递到哪里了？"),
    ("会员怎么开通？", "怎么开通会员"),
    ("发票怎么开", "怎么开发票？"),
    ("退货运费谁来承担", "退货的运费谁承担"),
]


def question_log(seed: int, filler: int) -> tuple[list[str], set[tuple[str, str]]]:
    """One question per line: the pairs above, shuffled among unrelated random questions."""
    rng = random.Random(seed)
    lines = [q for pair in QUESTION_PAIRS for q in pair]
    lines += [random_sentence(rng, rng.randint(6, 14)) + "？" for _ in range(filler)]
    rng.shuffle(lines)
    return lines, {tuple(sorted(pair)) for pair in QUESTION_PAIRS}


def test_corpus_wide_is_the_default_for_one_question_per_line(tmp_path, capsys):
    """A log of short questions, one per line: the near-duplicates on separate lines are paired (issue 16, case 16)."""
    lines, planted = question_log(seed=8, filler=400)
    log = tmp_path / "questions.txt"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, summary = tmp_path / "pairs.jsonl", tmp_path / "summary.json"
    assert main(["mine-pairs", "--in", str(log), "--out", str(out), "--summary", str(summary)]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(set(r) == {"text1", "text2", "score", "scheme"} and r["scheme"] == 3 for r in records)
    found = {tuple(sorted((r["text1"], r["text2"]))) for r in records}
    assert found == planted  # every near-duplicate, and the random questions pair with nothing
    for r in records:
        assert r["score"] == round(jaccard(shingles(r["text1"]), shingles(r["text2"])), 4) >= 0.7
    err = capsys.readouterr().err
    assert "scheme: corpus-wide" in err and "every document is one sentence" in err
    assert f"corpus-wide (scheme 3): {len(planted)} pairs" in err
    stats = json.loads(summary.read_text())["schemes"]["3"]
    assert stats["sentences"] == len(lines) and stats["all_pairs"] == len(lines) * (len(lines) - 1) // 2

    # --scheme groups is the old behaviour: nothing to pair within one-sentence documents, and it says so.
    assert main(["mine-pairs", "--in", str(log), "--out", str(out), "--scheme", "groups"]) == 0
    assert out.read_text(encoding="utf-8") == ""
    assert f"{len(lines)} one-sentence documents had no sentence to pair with" in capsys.readouterr().err


def test_corpus_wide_matches_exhaustive_search_and_draws_negatives_outside_the_pair():
    rng = random.Random(9)
    sentences = [random_sentence(rng) for _ in range(500)]
    for original in rng.sample(sentences, 30):
        sentences.append(near_copy(rng, original, rng.randint(1, 4)))
    sentences += sentences[:5]  # exact repeats are read once
    groups = [Group(DOCUMENTS, str(i), [s]) for i, s in enumerate(sentences)]
    miner = PairMiner(negatives=True, seed=3)
    pairs = list(miner.mine(groups))
    assert miner.ran.startswith("scheme: corpus-wide")
    found = {tuple(sorted((p.text1, p.text2))) for p in pairs}
    distinct = sorted(set(sentences))
    sets = {s: shingles(s) for s in distinct}
    exhaustive = {(a, b) for a, b in combinations(distinct, 2) if jaccard(sets[a], sets[b]) >= 0.7}
    assert len(exhaustive) >= 20 and found == exhaustive
    stats = miner.stats[3]
    assert stats.sentences == len(distinct) and stats.pairs == len(found)
    assert stats.candidates < 0.05 * stats.all_pairs
    for pair in pairs:
        assert pair.scheme == 3 and pair.negative not in (None, pair.text1, pair.text2)


def test_auto_keeps_within_document_mining_for_documents_of_several_sentences():
    groups, planted = synthetic_documents(seed=10, documents=5, sentences=8, planted=2)
    groups.insert(2, Group(DOCUMENTS, "one", ["只有一句话的文档。"]))
    miner = PairMiner()
    assert planted <= set(mined_set(miner, groups))
    assert miner.ran.startswith("scheme: within documents") and "1 one-sentence documents" in miner.ran
    assert miner.stats[3].groups == 0
    corpus = PairMiner(scheme="corpus")  # forced: also pairs across documents
    assert set(mined_set(corpus, groups)) >= planted and corpus.stats[3].groups == 6
