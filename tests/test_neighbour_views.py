"""benchmarks/neighbour_views.py: the corpus-neighbour positives tried for issue 15 (results/domains_selection.md)."""

import json

import torch
from conftest import benchmark_module

neighbour_views = benchmark_module("neighbour_views")


def naive_mutual(vectors):
    n = len(vectors)
    nearest = []
    for i in range(n):
        sims = [(float(vectors[i] @ vectors[j]), j) for j in range(n) if j != i]
        nearest.append(max(sims)[1])
    return [nearest[i] if nearest[nearest[i]] == i else -1 for i in range(n)]


def test_mutual_nearest_matches_a_naive_loop():
    gen = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(40, 8, generator=gen, dtype=torch.float64), dim=-1)
    got = neighbour_views.mutual_nearest(vectors).tolist()
    assert got == naive_mutual(vectors)
    assert any(j >= 0 for j in got) and any(j < 0 for j in got)  # both cases exercised


def test_writes_the_paraphrase_views_file(tmp_path, tiny_bert):
    from luse.augment.paraphrases import read_paraphrases

    corpus = tmp_path / "corpus.txt"
    sentences = ["今天天气很好", "今天天气不错", "我想买一本书", "他在图书馆看书", "今天天气很好"]
    corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    out = tmp_path / "views.jsonl"
    assert neighbour_views.main([str(corpus), str(out), "--base", str(tiny_bert)]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in records] == list(dict.fromkeys(sentences))  # each distinct sentence once
    table = read_paraphrases(out)  # the file views.paraphrases reads
    assert any(table.values())  # the closest pair is always mutual
    for text, views in table.items():
        for view in views:  # mutual: a neighbour lists the sentence back
            assert table[view] == [text]
