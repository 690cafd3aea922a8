"""Hard-negative mining: a synthetic corpus whose true positives are known, checked against a naive
re-computation of every step; then `luse mine-negatives` end to end with real HF checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cross_encoder import seq_classifier
from test_recipes import SENTENCES as ZH

from luse.cli.main import main
from luse.data.supervised import read_triplets
from luse.mining.negatives import MiningStats, mine_hard_negatives, parse_ranks, read_anchor_pairs

GROUPS, PER_GROUP, DIM = 8, 4, 16


def group_of(text: str) -> int:
    return int(text.split("-")[0][1:])


class GroupEncoder:
    """A bi-encoder stand-in: sentences of one group point the same way, plus seeded noise."""

    def __init__(self, noise: float = 0.3, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.vectors = {}
        for g in range(GROUPS):
            for i in range(PER_GROUP):
                v = rng.normal(0, noise, DIM)
                v[g] += 2.0
                self.vectors[f"g{g}-s{i}"] = v

    def encode(self, texts, batch_size=64, normalize=False, show_progress=False):
        out = np.stack([self.vectors[t] for t in texts]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True) if normalize else out


def oracle_with_mistakes(pairs):
    """1 for the same group, 0 otherwise; except that it misses g0-s3 as a positive of g0-s0 and
    mistakes every s2 for a positive of the next group's anchor (an unlabelled 'positive')."""
    scores = []
    for a, c in pairs:
        same = group_of(a) == group_of(c)
        if (a, c) == ("g0-s0", "g0-s3"):
            same = False
        if c.endswith("-s2") and group_of(c) == (group_of(a) + 1) % GROUPS:
            same = True
        scores.append(0.9 if same else 0.1)
    return np.array(scores)


PAIRS = [(f"g{g}-s0", f"g{g}-s1") for g in range(GROUPS)]
CORPUS = [f"g{g}-s{i}" for g in range(GROUPS) for i in range(PER_GROUP)]
LABELS = [(f"g{g}-s{i}", f"g{g}-s{j}") for g in range(GROUPS) for i in range(PER_GROUP) for j in range(i)]


def naive_mining(pairs, encoder, scorer, corpus, ranks, threshold, known):
    """Every step written out with loops: cosine to every corpus sentence, sort, leave out, cut, score."""
    def cos(x, y):
        return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))

    known = {frozenset(p) for p in known + pairs}
    stats = dict(candidates=0, removed=0, kept=0, known_positive_candidates=0, removed_known_positives=0,
                 missed_known_positives=0)
    triplets = []
    for anchor, positive in pairs:
        own = {anchor} | {p for a, p in pairs if a == anchor}
        ranked = sorted((c for c in corpus if c not in own),
                        key=lambda c: -cos(encoder.vectors[anchor], encoder.vectors[c]))
        kept = []
        for c in ranked[ranks[0] - 1:ranks[1]]:
            score = scorer([(anchor, c)])[0]
            is_known = frozenset((anchor, c)) in known
            stats["candidates"] += 1
            stats["removed"] += score >= threshold
            stats["known_positive_candidates"] += is_known
            stats["removed_known_positives"] += score >= threshold and is_known
            stats["missed_known_positives"] += score < threshold and is_known
            if score < threshold and not is_known:
                kept.append(c)
        stats["kept"] += len(kept)
        triplets += [{"anchor": anchor, "positive": positive, "negative": n} for n in kept[:1]]
    return triplets, stats


@pytest.mark.parametrize("ranks", [(1, 2), (1, 6), (3, 10), (2, 40)])
def test_mining_matches_a_naive_recomputation(ranks):
    encoder = GroupEncoder()
    triplets, stats = mine_hard_negatives(PAIRS, encoder, oracle_with_mistakes, corpus=CORPUS, ranks=ranks,
                                          threshold=0.5, known_positives=LABELS)
    expected_triplets, expected = naive_mining(PAIRS, encoder, oracle_with_mistakes, CORPUS, ranks, 0.5, LABELS)
    assert triplets == expected_triplets
    assert {k: getattr(stats, k) for k in expected} == expected
    assert stats.triplets == len(triplets) and stats.pairs_without_negative == len(PAIRS) - len(triplets)


def test_denoising_counts_on_known_positives():
    """Ranks 1-2 are exactly each anchor's two other group members (true positives): the cross-encoder
    removes all but the one it misses, which is still never written; nothing else is a candidate."""
    triplets, stats = mine_hard_negatives(PAIRS, GroupEncoder(), oracle_with_mistakes, corpus=CORPUS, ranks=(1, 2),
                                          threshold=0.5, known_positives=LABELS)
    assert stats.candidates == stats.known_positive_candidates == 2 * GROUPS
    assert stats.removed == stats.removed_known_positives == 2 * GROUPS - 1
    assert stats.missed_known_positives == 1 and stats.kept == 0 and triplets == []
    # Further out, every candidate is from another group: the removed ones are the scorer's mistakes
    # (unlabelled "positives"), none of them known; each kept negative is from another group.
    triplets, stats = mine_hard_negatives(PAIRS, GroupEncoder(), oracle_with_mistakes, corpus=CORPUS,
                                          ranks=(3, 30), threshold=0.5, known_positives=LABELS,
                                          negatives_per_pair=3)
    assert stats.known_positive_candidates == 0 and stats.removed == GROUPS and stats.removed_known_positives == 0
    assert len(triplets) == 3 * GROUPS
    assert all(group_of(t["negative"]) != group_of(t["anchor"]) for t in triplets)
    assert not any(t["negative"].endswith("-s2") and group_of(t["negative"]) == group_of(t["anchor"]) + 1
                   for t in triplets)
    assert "of which 0 were known positives" in stats.summary()


def test_without_labels_the_input_pairs_are_the_known_positives_and_corpus_defaults_to_positives():
    def everything_similar(pairs):
        return np.full(len(pairs), 0.7)

    triplets, stats = mine_hard_negatives(PAIRS, GroupEncoder(), everything_similar, ranks=(1, 3), threshold=0.8,
                                          negatives_per_pair=5, sampling="random", seed=1)
    # the corpus is the 8 positives; each anchor leaves out its own and keeps 3 of the other 7
    assert stats.candidates == 3 * GROUPS and stats.removed == 0 and stats.known_positive_candidates == 0
    assert len(triplets) == 3 * GROUPS
    assert all(t["negative"].endswith("-s1") and t["negative"] != t["positive"] for t in triplets)
    again, _ = mine_hard_negatives(PAIRS, GroupEncoder(), everything_similar, ranks=(1, 3), threshold=0.8,
                                   negatives_per_pair=5, sampling="random", seed=1)
    assert again == triplets
    # threshold below every score: all removed, nothing written
    none, stats = mine_hard_negatives(PAIRS, GroupEncoder(), everything_similar, ranks=(1, 3), threshold=0.5)
    assert none == [] and stats.removed == stats.candidates == 3 * GROUPS
    assert stats.pairs_without_negative == GROUPS


def test_parse_ranks():
    assert parse_ranks("10-100") == (10, 100)
    assert parse_ranks("5") == (1, 5)
    for bad in ("0-3", "7-2", "a-b", ""):
        with pytest.raises(ValueError, match="rank range"):
            parse_ranks(bad)


def test_pair_reader_forms_and_errors(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('{"anchor": "a", "positive": "b"}\n\n{"sentence1": "c", "sentence2": "d", "label": 0}\n',
                    encoding="utf-8")
    assert read_anchor_pairs(good) == [("a", "b", None), ("c", "d", 0.0)]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("a\tb\nc\td\t1\n", encoding="utf-8")
    assert read_anchor_pairs(tsv) == [("a", "b", None), ("c", "d", 1.0)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected a JSON object with string fields anchor/positive"):
        read_anchor_pairs(bad)
    with pytest.raises(ValueError, match=r"expected a .jsonl, .json or .tsv file"):
        read_anchor_pairs(tmp_path / "p.txt")


# --- the command, with real checkpoints -----------------------------------------------------------

def test_cli_with_real_checkpoints(tiny_bert, tmp_path, capsys):
    from luse.model.cross_encoder import load_cross_encoder

    cross_dir = seq_classifier(tiny_bert, tmp_path / "cross", num_labels=1)
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"anchor": s, "positive": s[:-2] + "。", "label": 1} for s in ZH[:6]]
    rows.append({"anchor": ZH[6], "positive": ZH[7], "label": 0})  # not a positive pair: skipped
    pairs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(ZH) + "\n", encoding="utf-8")

    def mine(threshold, name, extra=()):
        out, summary = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json"
        code = main(["mine-negatives", "--in", str(pairs), "--out", str(out), "--model", str(tiny_bert),
                     "--cross-encoder", str(cross_dir), "--corpus", str(corpus), "--ranks", "2-5",
                     "--threshold", str(threshold), "--negatives-per-pair", "10", "--summary", str(summary),
                     "--device", "cpu", *extra])
        assert code == 0, capsys.readouterr().err
        return list(read_triplets(out)), MiningStats(**{k: v for k, v in json.loads(summary.read_text()).items()
                                                        if k != "out" and k != "ranks"})

    everything, stats = mine(2.0, "all")  # sigmoid scores are < 2: nothing removed
    assert stats.pairs == 6 and stats.candidates == 6 * 4 and stats.removed == 0 and len(everything) == 24
    assert "1 rows with label <= 0 skipped" in capsys.readouterr().err
    for anchor, positive, negative in everything:
        assert negative not in (anchor, positive) and negative in ZH
    # a threshold in the middle of the real cross-encoder scores removes exactly those at or above it
    cross = load_cross_encoder(str(cross_dir), device="cpu")
    scores = dict(zip([(a, n) for a, _, n in everything], cross.predict([(a, n) for a, _, n in everything])))
    threshold = float(np.median(list(scores.values())))
    kept, stats = mine(threshold, "half")
    assert {(a, n) for a, _, n in kept} == {pair for pair, s in scores.items() if s < threshold}
    assert stats.removed == sum(s >= threshold for s in scores.values()) > 0
    # labels: a known positive pair is never written, whatever its score
    labels = tmp_path / "labels.tsv"
    anchor, _, negative = everything[0]
    labels.write_text(f"{negative}\t{anchor}\n", encoding="utf-8")
    labelled, stats = mine(2.0, "labelled", ["--labels", str(labels)])
    known = sum({a, n} == {anchor, negative} for a, _, n in everything)  # either order counts
    assert (anchor, negative) not in {(a, n) for a, _, n in labelled} and stats.known_positive_candidates == known
    assert len(labelled) == 24 - known and stats.missed_known_positives == known


def test_cli_bad_input_is_one_line(tiny_bert, tmp_path, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("a\tb\nonly one column\n", encoding="utf-8")
    code = main(["mine-negatives", "--in", str(pairs), "--out", str(tmp_path / "o.jsonl"), "--model", str(tiny_bert),
                 "--cross-encoder", str(tiny_bert)])
    err = capsys.readouterr().err
    assert code == 2 and "pairs.tsv:2: expected anchor<TAB>positive[<TAB>label]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()
    assert main(["mine-negatives", "--in", str(pairs), "--out", "o", "--model", "m", "--cross-encoder", "c",
                 "--ranks", "9-3"]) == 2
