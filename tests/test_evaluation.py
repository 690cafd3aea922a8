"""Evaluation: Spearman, BERT-whitening, alignment/uniformity, evaluate_sts and the results table."""

import math
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from luse.data.sts import StsSet
from luse.eval.sts import (
    alignment,
    apply_whitening,
    evaluate_sts,
    fit_whitening,
    format_table,
    label_free_metrics,
    spearman_x100,
    uniformity,
)
from luse.model.encoder import SentenceEncoder

PAIRS = [
    ("一个女孩在梳头。", "一个女孩在给头发做发型。", 4.0),
    ("一群男人在海滩上踢足球。", "一群男孩在海滩上踢足球。", 3.5),
    ("一个人正在切黄瓜。", "一个人在切黄瓜。", 5.0),
    ("一个人在弹竖琴。", "一个男人在玩键盘。", 1.0),
    ("一个女人在跳舞。", "一个男人在说话。", 0.0),
    ("一个人在切黄瓜。", "一个女人在切洋葱。", 2.0),  # repeats a sentence: encoded once
    ("飞机要起飞了。", "一架飞机正在起飞。", 4.6),
    ("一只猫在玩毛线球。", "一只狗在草地上跑。", 0.8),
    ("孩子们在公园里玩耍。", "小朋友在公园玩。", 4.2),
    ("他在厨房做饭。", "他在写作业。", 0.4),
]


@pytest.fixture(scope="module")
def encoder(tiny_bert):
    return SentenceEncoder.from_pretrained(str(tiny_bert))


@pytest.fixture
def sts_set():
    first, second, scores = (list(column) for column in zip(*PAIRS))
    return StsSet("tiny-sts", first, second, scores)


# --- Spearman -------------------------------------------------------------------------------------

def test_spearman_known_values():
    assert spearman_x100([0.1, 0.5, 0.9, 1.3], [1, 2, 3, 4]) == pytest.approx(100.0)
    assert spearman_x100([4, 3, 2, 1], [1, 2, 3, 4]) == pytest.approx(-100.0)
    # One swapped neighbour: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman_x100([1, 3, 2, 4], [1, 2, 3, 4]) == pytest.approx(80.0)


def test_spearman_constant_side_is_nan_and_bad_shapes_raise():
    assert math.isnan(spearman_x100([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        spearman_x100([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least two"):
        spearman_x100([1], [1])


# --- whitening ------------------------------------------------------------------------------------

def correlated(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 5


def test_whitened_vectors_have_zero_mean_and_identity_covariance():
    x = correlated()
    mu, w = fit_whitening(x)
    z = apply_whitening(x, mu, w)
    assert mu.shape == (1, 6) and w.shape == (6, 6)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-10)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(6), atol=1e-8)


def test_whitening_dims_keep_the_leading_directions():
    x = correlated()
    mu, w = fit_whitening(x)
    mu3, w3 = fit_whitening(x, dims=3)
    assert w3.shape == (6, 3)
    z3 = apply_whitening(x, mu3, w3)
    assert z3.shape == (400, 3)
    np.testing.assert_allclose(np.cov(z3, rowvar=False), np.eye(3), atol=1e-8)
    np.testing.assert_allclose(w3, w[:, :3])
    # The kept directions are those of largest variance in the original space.
    variance = np.var((x - mu) @ (w * np.sqrt(np.linalg.svd(np.cov(x, rowvar=False))[1])), axis=0)
    assert np.all(np.diff(variance) <= 1e-9)


def test_whitening_accepts_tensors_and_drops_zero_variance_directions():
    x = torch.tensor(correlated(n=4, d=10), dtype=torch.float32)  # rank <= 3 after centring
    mu, w = fit_whitening(x)
    assert w.shape[1] == 3
    z = apply_whitening(x, mu, w)
    assert np.isfinite(z).all()
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(3), atol=1e-4)


def test_whitening_rejects_bad_input():
    with pytest.raises(ValueError, match="between 1 and"):
        fit_whitening(correlated(), dims=7)
    with pytest.raises(ValueError, match="at least two"):
        fit_whitening(np.ones((1, 4)))
    with pytest.raises(ValueError, match="identical"):
        fit_whitening(np.ones((5, 4)))
    with pytest.raises(ValueError, match="2-d"):
        fit_whitening(np.ones(4))


# --- alignment and uniformity ---------------------------------------------------------------------

def test_alignment_known_configurations():
    x = np.eye(4)
    assert alignment(x, x) == 0.0
    assert alignment(x, 3 * x) == pytest.approx(0.0)  # rows are normalised first
    assert alignment(x, np.roll(x, 1, axis=1)) == pytest.approx(2.0)  # orthogonal pairs: ||x - y||^2 = 2
    assert alignment(x, -x) == pytest.approx(4.0)
    assert alignment(x, -x, alpha=1) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="same shape"):
        alignment(np.eye(3), np.eye(4))


def test_uniformity_known_configurations():
    assert uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)  # -t * 4
    assert uniformity(np.ones((5, 3))) == pytest.approx(0.0)
    # A regular simplex: d + 1 unit vectors, all pairs at squared distance 2 + 2 / d.
    d = 3
    simplex = np.eye(d + 1) - 1 / (d + 1)
    assert uniformity(simplex, t=1) == pytest.approx(-(2 + 2 / d))
    with pytest.raises(ValueError, match="at least two"):
        uniformity(np.ones((1, 3)))


def test_uniformity_samples_large_inputs_reproducibly():
    x = np.random.default_rng(0).normal(size=(300, 8))
    sampled = uniformity(x, max_points=100, seed=1)
    assert sampled == uniformity(x, max_points=100, seed=1)
    assert sampled != uniformity(x, max_points=100, seed=2)
    assert sampled == pytest.approx(uniformity(x), abs=0.1)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 20), st.integers(1, 6), st.integers(0, 2**16), st.floats(0.5, 4))
def test_uniformity_lies_between_antipodal_and_collapsed(n, d, seed, t):
    x = np.random.default_rng(seed).normal(size=(n, d))
    assert -4 * t - 1e-9 <= uniformity(x, t=t) <= 1e-9


# --- evaluate_sts ---------------------------------------------------------------------------------

def test_evaluate_sts_returns_documented_keys_and_finite_scores(encoder, sts_set):
    results = evaluate_sts(encoder, [sts_set], poolings=["pooler", "mean"], whitening_dims=4)
    assert list(results) == ["tiny-sts"]
    assert list(results["tiny-sts"]) == ["pooler", "pooler+whiten", "pooler+whiten-4",
                                         "mean", "mean+whiten", "mean+whiten-4"]
    assert all(math.isfinite(v) and -100 <= v <= 100 for v in results["tiny-sts"].values())


class HashEncoder:
    """A stand-in encoder with well-separated, reproducible vectors (a random model's are nearly parallel)."""

    pooling = "cls"

    def encode(self, texts, batch_size=64, pooling=None, show_progress=False):
        seeds = [zlib.crc32(f"{pooling}:{text}".encode()) for text in texts]
        return np.stack([np.random.default_rng(seed).normal(size=16) for seed in seeds]).astype(np.float32)


def test_evaluate_sts_matches_a_direct_computation(sts_set):
    fake = HashEncoder()
    results = evaluate_sts(fake, [sts_set], whitening_dims=5)["tiny-sts"]
    left = fake.encode(sts_set.sentences1, pooling="cls").astype(np.float64)
    right = fake.encode(sts_set.sentences2, pooling="cls").astype(np.float64)

    def cosine(a, b):
        return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    assert results["cls"] == pytest.approx(spearman_x100(cosine(left, right), sts_set.scores), abs=1e-9)
    # Whitening is fitted on the raw vectors of both sides of the evaluated file.
    for key, dims in [("cls+whiten", None), ("cls+whiten-5", 5)]:
        mu, w = fit_whitening(np.concatenate([left, right]), dims)
        whitened = cosine(apply_whitening(left, mu, w), apply_whitening(right, mu, w))
        assert results[key] == pytest.approx(spearman_x100(whitened, sts_set.scores), abs=1e-9)
    assert len(set(results.values())) == 3  # the variants really differ


def test_evaluate_sts_encodes_each_unique_sentence_once_per_pooling(encoder, sts_set, monkeypatch):
    calls = []
    original = encoder.encode

    def spy(texts, **kwargs):
        calls.append((list(texts), kwargs["pooling"]))
        return original(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode", spy)
    other = StsSet("other", sts_set.sentences2[:3], sts_set.sentences1[:3], [1.0, 2.0, 3.0])
    evaluate_sts(encoder, [sts_set, other], poolings=["pooler", "mean"], whitening=(False,))
    assert [pooling for _, pooling in calls] == ["pooler", "mean"]
    for texts, _ in calls:
        assert len(texts) == len(set(texts)) == len(sts_set.unique_sentences())


def test_evaluate_sts_defaults_and_paths(encoder, tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\t{s}\n" for a, b, s in PAIRS), encoding="utf-8")
    results = evaluate_sts(encoder, [str(path)])
    assert list(results) == [str(path)]
    assert list(results[str(path)]) == ["pooler", "pooler+whiten"]
    assert list(evaluate_sts(encoder, [path], whitening=(True,))[str(path)]) == ["pooler+whiten"]


def test_evaluate_sts_rejects_bad_arguments(encoder, sts_set):
    with pytest.raises(ValueError, match="unknown pooling"):
        evaluate_sts(encoder, [sts_set], poolings=["max"])
    with pytest.raises(ValueError, match="distinct names"):
        evaluate_sts(encoder, [sts_set, sts_set])
    with pytest.raises(ValueError, match="exceed the vector size"):
        evaluate_sts(encoder, [sts_set], whitening_dims=64)
    with pytest.raises(ValueError, match="positive"):
        evaluate_sts(encoder, [sts_set], whitening_dims=0)
    with pytest.raises(ValueError, match="False and/or True"):
        evaluate_sts(encoder, [sts_set], whitening=())


# --- label-free metrics ---------------------------------------------------------------------------

SENTENCES = [a for a, _, _ in PAIRS] + [b for _, b, _ in PAIRS]


def test_label_free_metrics_are_finite_reproducible_and_restore_state(encoder):
    encoder.train()
    rng_before = torch.get_rng_state()
    first = label_free_metrics(encoder, SENTENCES)
    assert set(first) == {"alignment", "uniformity"}
    assert 0 < first["alignment"] < 4  # dropout views differ, but not maximally
    assert first["uniformity"] < 0
    assert all(module.training for module in encoder.modules())
    assert torch.equal(torch.get_rng_state(), rng_before)
    encoder.eval()
    assert label_free_metrics(encoder, SENTENCES) == first
    assert not any(module.training for module in encoder.modules())
    assert label_free_metrics(encoder, SENTENCES, seed=1) != first


def test_label_free_metrics_ignore_the_train_only_mlp(encoder):
    with_mlp = SentenceEncoder(encoder.backbone, encoder.tokenizer, mlp=True)
    assert label_free_metrics(with_mlp, SENTENCES) == label_free_metrics(encoder, SENTENCES)


def test_label_free_metrics_sample_and_reject_too_few(encoder):
    assert math.isfinite(label_free_metrics(encoder, SENTENCES, n=5)["uniformity"])
    with pytest.raises(ValueError, match="two distinct"):
        label_free_metrics(encoder, ["同一句", "同一句"])


# --- format_table ---------------------------------------------------------------------------------

def test_format_table_shape_and_average_row():
    results = {"a.tsv": {"cls": 70.04, "cls+whiten": 72.96},
               "long/name/b.jsonl": {"cls": 60.0, "cls+whiten": 61.0}}
    lines = format_table(results).splitlines()
    assert len(lines) == 2 + 2 + 1  # header, rule, one row per file, avg
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert cells[0] == ["file", "cls", "cls+whiten"]
    assert cells[2] == ["a.tsv", "70.0", "73.0"]
    assert cells[3] == ["long/name/b.jsonl", "60.0", "61.0"]
    assert cells[4] == ["avg", "65.0", "67.0"]
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_format_table_single_file_and_missing_variant():
    lines = format_table({"a.tsv": {"cls": 70.0}}).splitlines()
    assert len(lines) == 3 and "avg" not in lines[-1]
    table = format_table({"a.tsv": {"cls": 70.0, "mean": 50.0}, "b.tsv": {"cls": 60.0}})
    assert [c.strip() for c in table.splitlines()[3].strip("|").split("|")] == ["b.tsv", "60.0", "-"]
    assert [c.strip() for c in table.splitlines()[4].strip("|").split("|")] == ["avg", "65.0", "50.0"]
