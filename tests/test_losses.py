"""Losses against naive references written with explicit loops.

Each reference is written once and run on two backends: Python floats with ``math`` (the values
must agree to 1e-6) and scalar torch ops (autograd through it gives the reference gradients).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from luse.errors import InputError
from luse.losses import (
    CoSENTLoss,
    LuseLoss,
    SimCSESupLoss,
    SimCSEUnsupLoss,
    cosent_loss,
    luse_loss,
    simcse_sup_loss,
    simcse_unsup_loss,
)


def _py_cos(u: list[float], v: list[float]) -> float:
    dot = sum(x * y for x, y in zip(u, v))
    return dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))


def _torch_cos(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.dot(u, v) / (u.norm() * v.norm())


PY = SimpleNamespace(exp=math.exp, log=math.log, cos=_py_cos, data=lambda t: t.tolist())
TORCH = SimpleNamespace(exp=torch.exp, log=lambda x: torch.log(torch.as_tensor(x, dtype=torch.float64)),
                        cos=_torch_cos, data=lambda t: t)


def luse_reference(views, temperature, ops):
    views = ops.data(views)
    n_sentences, n_views = len(views), len(views[0])
    embeddings = [views[s][v] for s in range(n_sentences) for v in range(n_views)]
    total = 0.0
    for i, anchor in enumerate(embeddings):
        others = [k for k in range(len(embeddings)) if k != i]
        denominator = sum(ops.exp(ops.cos(anchor, embeddings[k]) / temperature) for k in others)
        positives = [k for k in others if k // n_views == i // n_views]
        log_probs = [ops.log(ops.exp(ops.cos(anchor, embeddings[k]) / temperature) / denominator) for k in positives]
        total = total - sum(log_probs) / (n_views - 1)
    return total / len(embeddings)


def luse_each_reference(views, temperature, ops):
    """positives="each": a softmax per (anchor, positive) over that positive and the other sentences' views."""
    views = ops.data(views)
    n_sentences, n_views = len(views), len(views[0])
    embeddings = [views[s][v] for s in range(n_sentences) for v in range(n_views)]
    total = 0.0
    for i, anchor in enumerate(embeddings):
        score = [ops.exp(ops.cos(anchor, e) / temperature) for e in embeddings]
        negatives = sum((score[k] for k in range(len(embeddings)) if k // n_views != i // n_views), 0.0)
        positives = [k for k in range(len(embeddings)) if k != i and k // n_views == i // n_views]
        total = total - sum(ops.log(score[k] / (score[k] + negatives)) for k in positives) / (n_views - 1)
    return total / len(embeddings)


def simcse_sup_reference(anchor, positive, negative, temperature, hard_negative_weight, ops):
    anchor, positive = ops.data(anchor), ops.data(positive)
    negative = ops.data(negative) if negative is not None else []
    total = 0.0
    for i, a in enumerate(anchor):
        terms = [ops.exp(ops.cos(a, p) / temperature) for p in positive]
        terms += [ops.exp(ops.cos(a, n) / temperature + (hard_negative_weight if j == i else 0.0))
                  for j, n in enumerate(negative)]
        total = total - ops.log(terms[i] / sum(terms))
    return total / len(anchor)


def cosent_reference(a, b, scores, scale, ops):
    a, b, scores = ops.data(a), ops.data(b), scores.tolist()
    cosines = [ops.cos(x, y) for x, y in zip(a, b)]
    total = 1.0
    for i in range(len(cosines)):
        for j in range(len(cosines)):
            if scores[i] > scores[j]:
                total = total + ops.exp(scale * (cosines[j] - cosines[i]))
    return ops.log(total)


def random_tensor(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64)


def reference_gradient(reference, tensors, *args):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    reference(*leaves, *args, TORCH).backward()
    return [leaf.grad for leaf in leaves]


def fast_gradient(loss_fn, tensors, *args, **kwargs):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    loss_fn(*leaves, *args, **kwargs).backward()
    return [leaf.grad for leaf in leaves]


def assert_gradients_close(actual, expected):
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------- LUSE


@settings(max_examples=25, deadline=None)
@given(n_sentences=st.integers(1, 4), n_views=st.integers(2, 4), hidden=st.integers(2, 6),
       temperature=st.sampled_from([0.05, 0.1, 0.5, 2.0]), seed=st.integers(0, 2**16), gather=st.booleans())
def test_luse_matches_loop_reference(n_sentences, n_views, hidden, temperature, seed, gather):
    views = random_tensor(n_sentences, n_views, hidden, seed=seed)
    expected = luse_reference(views, temperature, PY)
    assert abs(luse_loss(views, temperature=temperature, gather=gather).item() - expected) < 1e-6


@pytest.mark.parametrize(("n_sentences", "n_views", "temperature"), [(3, 2, 0.05), (3, 4, 0.05), (2, 3, 0.7)])
def test_luse_gradient_matches_loop_reference(n_sentences, n_views, temperature):
    views = random_tensor(n_sentences, n_views, 5, seed=n_views)
    expected = reference_gradient(luse_reference, [views], temperature)
    assert_gradients_close(fast_gradient(luse_loss, [views], temperature=temperature), expected)


@settings(max_examples=25, deadline=None)
@given(n_sentences=st.integers(1, 4), n_views=st.integers(2, 4), hidden=st.integers(2, 6),
       temperature=st.sampled_from([0.05, 0.1, 0.5, 2.0]), seed=st.integers(0, 2**16), gather=st.booleans())
def test_luse_each_matches_loop_reference(n_sentences, n_views, hidden, temperature, seed, gather):
    views = random_tensor(n_sentences, n_views, hidden, seed=seed)
    expected = luse_each_reference(views, temperature, PY)
    got = luse_loss(views, temperature=temperature, gather=gather, positives="each").item()
    assert abs(got - expected) < 1e-6


@pytest.mark.parametrize(("n_sentences", "n_views", "temperature"), [(3, 2, 0.05), (3, 4, 0.05), (2, 3, 0.7), (1, 3, 0.1)])
def test_luse_each_gradient_matches_loop_reference(n_sentences, n_views, temperature):
    views = random_tensor(n_sentences, n_views, 5, seed=n_views)
    expected = reference_gradient(luse_each_reference, [views], temperature)
    got = fast_gradient(luse_loss, [views], temperature=temperature, positives="each")
    assert all(bool(torch.isfinite(g).all()) for g in got)  # one sentence: no negatives at all, still finite
    assert_gradients_close(got, expected)


def test_luse_each_differs_only_with_more_than_two_views():
    two, four = random_tensor(5, 2, 8, seed=1), random_tensor(5, 4, 8, seed=1)
    torch.testing.assert_close(luse_loss(two, positives="each"), luse_loss(two), rtol=0, atol=1e-10)
    assert abs(luse_loss(four, positives="each").item() - luse_loss(four).item()) > 1e-3
    with pytest.raises(InputError, match="luse_loss: positives: expected share or each"):
        luse_loss(four, positives="both")


def test_luse_with_two_views_is_nt_xent():
    """V = 2: each embedding must pick its partner among the 2B - 1 others (SimCLR's NT-Xent)."""
    n_sentences, temperature = 5, 0.05
    views = random_tensor(n_sentences, 2, 8, seed=3)
    flat = F.normalize(views.reshape(2 * n_sentences, 8), dim=-1)
    logits = flat @ flat.T / temperature
    logits.fill_diagonal_(float("-inf"))
    partners = torch.arange(2 * n_sentences) ^ 1  # sentence-major rows: 0<->1, 2<->3, ...
    expected = F.cross_entropy(logits, partners)
    torch.testing.assert_close(luse_loss(views, temperature=temperature), expected, rtol=0, atol=1e-10)


def separated_views(n_sentences: int, n_views: int) -> torch.Tensor:
    """Every view of sentence s is the unit vector e_s: positives at cosine 1, negatives at 0."""
    return torch.eye(n_sentences, dtype=torch.float64)[:, None, :].expand(n_sentences, n_views, n_sentences)


@pytest.mark.parametrize(("n_sentences", "n_views"), [(2, 2), (4, 3), (6, 5)])
@pytest.mark.parametrize("temperature", [0.05, 0.2, 1.0])
def test_luse_separated_views_closed_form(n_sentences, n_views, temperature):
    # Each anchor: V - 1 positives at e^(1/T), (B - 1) V negatives at e^0, each positive gets 1 / (V - 1).
    expected = math.log(n_views - 1 + (n_sentences - 1) * n_views * math.exp(-1 / temperature))
    loss = luse_loss(separated_views(n_sentences, n_views), temperature=temperature)
    assert abs(loss.item() - expected) < 1e-9


@pytest.mark.parametrize(("n_sentences", "n_views", "seed"), [(2, 2, 0), (4, 3, 1), (8, 4, 2), (8, 2, 3)])
def test_luse_separated_views_score_lower_than_random_views(n_sentences, n_views, seed):
    random_views = random_tensor(n_sentences, n_views, n_sentences, seed=seed)
    separated = luse_loss(separated_views(n_sentences, n_views))
    assert separated < luse_loss(random_views)
    # Cross-entropy against a uniform target over V - 1 positives can never go below its entropy.
    assert separated >= math.log(n_views - 1) - 1e-12


def test_luse_temperature_effect():
    views = separated_views(4, 3)
    losses = [luse_loss(views, temperature=t).item() for t in (0.02, 0.05, 0.2, 1.0)]
    assert losses == sorted(losses), "sharper softmax must reward well separated views more"
    # A huge temperature flattens the softmax to uniform over the B V - 1 candidates.
    random_views = random_tensor(4, 3, 6, seed=7)
    assert abs(luse_loss(random_views, temperature=1e9).item() - math.log(4 * 3 - 1)) < 1e-6


def test_luse_ignores_embedding_norms():
    views = random_tensor(3, 3, 4, seed=11)
    scales = torch.rand(3, 3, 1, dtype=torch.float64) * 10 + 0.1
    torch.testing.assert_close(luse_loss(views * scales), luse_loss(views), rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", [(4, 1, 8), (4, 8), (0, 2, 8)])
def test_luse_rejects_bad_shapes(shape):
    with pytest.raises(InputError, match=r"luse_loss: views: expected .*views >= 2.*got \(" + str(shape[0])):
        luse_loss(torch.zeros(shape))


@pytest.mark.parametrize("temperature", [0.0, -0.05])
def test_luse_rejects_non_positive_temperature(temperature):
    with pytest.raises(InputError, match="temperature: expected a number > 0"):
        luse_loss(random_tensor(2, 2, 3), temperature=temperature)
    with pytest.raises(InputError, match="temperature"):
        LuseLoss(temperature=temperature)


# -------------------------------------------------------------------------------------- SimCSE


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 5), hidden=st.integers(2, 6), temperature=st.sampled_from([0.05, 0.3]),
       seed=st.integers(0, 2**16), gather=st.booleans())
def test_simcse_unsup_matches_loop_reference(batch, hidden, temperature, seed, gather):
    views = random_tensor(batch, 2, hidden, seed=seed)
    expected = simcse_sup_reference(views[:, 0], views[:, 1], None, temperature, 0.0, PY)
    assert abs(simcse_unsup_loss(views, temperature=temperature, gather=gather).item() - expected) < 1e-6


@settings(max_examples=20, deadline=None)
@given(batch=st.integers(1, 5), hidden=st.integers(2, 6), weight=st.sampled_from([0.0, 0.7, -1.5]),
       seed=st.integers(0, 2**16), gather=st.booleans())
def test_simcse_sup_matches_loop_reference(batch, hidden, weight, seed, gather):
    anchor, positive, negative = random_tensor(3, batch, hidden, seed=seed)
    expected = simcse_sup_reference(anchor, positive, negative, 0.05, weight, PY)
    loss = simcse_sup_loss(anchor, positive, negative, hard_negative_weight=weight, gather=gather)
    assert abs(loss.item() - expected) < 1e-6


def test_simcse_unsup_gradient_matches_loop_reference():
    views = random_tensor(4, 2, 5, seed=5)
    expected = reference_gradient(lambda v, t, ops: simcse_sup_reference(v[:, 0], v[:, 1], None, t, 0.0, ops),
                                  [views], 0.05)
    assert_gradients_close(fast_gradient(simcse_unsup_loss, [views]), expected)


@pytest.mark.parametrize("weight", [0.0, 1.3])
def test_simcse_sup_gradient_matches_loop_reference(weight):
    tensors = list(random_tensor(3, 4, 5, seed=6))
    expected = reference_gradient(simcse_sup_reference, tensors, 0.05, weight)
    assert_gradients_close(fast_gradient(simcse_sup_loss, tensors, hard_negative_weight=weight), expected)


def test_simcse_hard_negative_weight_only_touches_own_negative():
    anchor, positive, negative = random_tensor(3, 4, 6, seed=8)
    base = simcse_sup_loss(anchor, positive, negative)
    # A large weight on the anchor's own negative steals probability from the target: loss rises.
    assert simcse_sup_loss(anchor, positive, negative, hard_negative_weight=5.0) > base
    assert simcse_sup_loss(anchor, positive, negative, hard_negative_weight=-50.0) < base


def test_simcse_sup_without_negatives_is_unsup():
    views = random_tensor(6, 2, 4, seed=9)
    torch.testing.assert_close(simcse_sup_loss(views[:, 0], views[:, 1]), simcse_unsup_loss(views),
                               rtol=0, atol=0)


def test_simcse_bad_inputs():
    anchor, positive = random_tensor(2, 3, 4)
    with pytest.raises(InputError, match=r"simcse_unsup_loss: views: expected .*got \(3, 3, 4\)"):
        simcse_unsup_loss(random_tensor(3, 3, 4))
    with pytest.raises(InputError, match=r"simcse_sup_loss: negative: expected the anchor's shape"):
        simcse_sup_loss(anchor, positive, random_tensor(2, 4))
    with pytest.raises(InputError, match="hard_negative_weight: expected 0.0 when no hard negatives"):
        simcse_sup_loss(anchor, positive, None, hard_negative_weight=1.0)


# -------------------------------------------------------------------------------------- CoSENT


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 6), hidden=st.integers(2, 6), scale=st.sampled_from([1.0, 20.0]),
       seed=st.integers(0, 2**16), gather=st.booleans())
def test_cosent_matches_loop_reference(batch, hidden, scale, seed, gather):
    a, b = random_tensor(2, batch, hidden, seed=seed)
    scores = torch.randint(0, 3, (batch,), generator=torch.Generator().manual_seed(seed))  # ties included
    expected = cosent_reference(a, b, scores, scale, PY)
    assert abs(cosent_loss(a, b, scores, scale=scale, gather=gather).item() - expected) < 1e-6


def test_cosent_gradient_matches_loop_reference():
    a, b = random_tensor(2, 6, 5, seed=12)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.0, 1.0], dtype=torch.float64)
    expected = reference_gradient(lambda x, y, s, scale, ops: cosent_reference(x, y, s, scale, ops),
                                  [a, b], scores, 20.0)
    assert_gradients_close(fast_gradient(cosent_loss, [a, b], scores), expected)


def test_cosent_all_ties_give_zero_loss_and_gradient():
    a, b = (t.requires_grad_(True) for t in random_tensor(2, 5, 4, seed=13))
    loss = cosent_loss(a, b, torch.ones(5))
    loss.backward()
    assert loss.item() == 0.0  # log(1): no pair to rank
    assert torch.count_nonzero(a.grad) == 0 and torch.count_nonzero(b.grad) == 0


def test_cosent_is_stable_for_large_scales():
    # Reversed order at scale 1000: the naive log(1 + sum exp(...)) overflows float32 to inf.
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # cosines 0 and 1
    loss = cosent_loss(a, b, torch.tensor([1, 0]), scale=1000.0)  # pair 0 should rank first
    assert torch.isfinite(loss)
    assert abs(loss.item() - 1000.0) < 1e-3


def test_cosent_bad_inputs():
    a, b = random_tensor(2, 3, 4)
    with pytest.raises(InputError, match=r"cosent_loss: scores: expected a tensor of shape \[3\]"):
        cosent_loss(a, b, torch.zeros(4))
    with pytest.raises(InputError, match="cosent_loss: b: expected the shape of a"):
        cosent_loss(a, b[:, :2], torch.zeros(3))
    with pytest.raises(InputError, match="scale: expected a number > 0"):
        CoSENTLoss(scale=0)


# ------------------------------------------------------------------------------ modules


def test_modules_match_functions():
    views = random_tensor(4, 3, 5, seed=14)
    scores = torch.tensor([0.0, 1.0, 0.5, 0.2])
    cases = [
        (LuseLoss(temperature=0.1)(views), luse_loss(views, temperature=0.1)),
        (SimCSEUnsupLoss(temperature=0.1)(views[:, :2]), simcse_unsup_loss(views[:, :2], temperature=0.1)),
        (SimCSESupLoss(hard_negative_weight=0.5)(*views.unbind(1)),
         simcse_sup_loss(*views.unbind(1), hard_negative_weight=0.5)),
        (CoSENTLoss(scale=10.0)(views[:, 0], views[:, 1], scores),
         cosent_loss(views[:, 0], views[:, 1], scores, scale=10.0)),
    ]
    for module_loss, function_loss in cases:
        torch.testing.assert_close(module_loss, function_loss, rtol=0, atol=0)
    assert "temperature=0.1" in repr(LuseLoss(temperature=0.1))
