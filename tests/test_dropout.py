"""luse/dropout.py: torch's dropout distribution from a cheaper mask, on CPU tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from luse.model import fastpath
from luse.model.dropout import LANE_VALUES, FastDropout, dropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_is_one_minus_p_in_every_lane(p):
    torch.manual_seed(0)
    count = 1 << 20
    mask, scale = keep_mask((count,), p)
    p_rounded = round(p * LANE_VALUES) / LANE_VALUES
    assert abs(p_rounded - p) <= 0.5 / LANE_VALUES
    assert scale == pytest.approx(1 / (1 - p_rounded))
    # Each of the four 16-bit lanes of a word on its own: a lane with a constant bit (the top bit
    # of a plain random_() is always 0) would keep far more or fewer than 1 - p.
    lanes = mask.view(-1, 4).double().mean(dim=0)
    sigma = math.sqrt(p * (1 - p) / (count / 4))
    assert torch.all((lanes - (1 - p_rounded)).abs() < 5 * sigma), lanes
    # Neighbouring elements are independent: P(both kept) = (1 - p)^2.
    both = (mask[:-1] & mask[1:]).double().mean().item()
    assert both == pytest.approx((1 - p_rounded) ** 2, abs=5 * math.sqrt((1 - p) ** 2 / count))


def test_odd_shapes_and_extremes():
    mask, _ = keep_mask((3, 5, 7), 0.3)
    assert mask.shape == (3, 5, 7) and mask.dtype == torch.bool
    all_dropped, scale = keep_mask((10,), 1.0)
    assert not all_dropped.any() and scale == 0.0
    assert keep_mask((1000,), 0.0)[0].all()


def test_forward_and_backward_apply_the_same_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(2)
    out = dropout(x, 0.25)
    torch.manual_seed(2)
    mask, scale = keep_mask(x.shape, 0.25)  # the same draw
    torch.testing.assert_close(out, x.detach() * mask * scale)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    torch.testing.assert_close(x.grad, upstream * mask * scale)


def test_expectation_and_variance_match_torch_dropout():
    torch.manual_seed(3)
    x = torch.randn(256, 256)
    ours = torch.stack([dropout(x, 0.1) for _ in range(200)])
    theirs = torch.stack([F.dropout(x, 0.1, True) for _ in range(200)])
    torch.testing.assert_close(ours.mean(0).mean(), x.mean(), atol=2e-3, rtol=0)
    assert ours.var(0).mean().item() == pytest.approx(theirs.var(0).mean().item(), rel=0.03)


def test_eval_mode_and_repeatability():
    x = torch.randn(8, 16)
    assert dropout(x, 0.5, training=False) is x or torch.equal(dropout(x, 0.5, training=False), x)
    torch.manual_seed(5)
    first = dropout(x, 0.5)
    torch.manual_seed(5)
    assert torch.equal(first, dropout(x, 0.5))


def test_use_fast_dropout_swaps_modules_in_place():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.3), nn.ReLU()))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_fast_dropout(model) == 2
    assert isinstance(model[1], FastDropout) and model[1].p == 0.2 and model[2][0].p == 0.3
    assert use_fast_dropout(model) == 0  # already swapped
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    model.eval()
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), torch.relu(model[0](x)))


def test_written_out_attention_equals_sdpa_without_the_dropout(monkeypatch):
    """The CPU attention path with dropout: the same products as SDPA (checked with the dropout
    itself replaced by the identity), and the dropout really applied to the probabilities."""
    torch.manual_seed(6)
    query, key, value = (torch.randn(3, 2, 5, 8) for _ in range(3))
    key_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)[:, None, None, :]
    reference = F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, scale=0.3)
    with_dropout = fastpath._attention(query, key, value, key_mask, 0.3, 0.5, fast_dropout=True)
    assert not torch.allclose(with_dropout, reference)
    monkeypatch.setattr(fastpath, "dropout", lambda probs, p: probs)
    torch.testing.assert_close(fastpath._attention(query, key, value, key_mask, 0.3, 0.5, fast_dropout=True),
                               reference)


def test_encoder_swaps_its_dropout_unless_told_not_to(tiny_bert):
    from luse.model.encoder import SentenceEncoder

    def kinds(encoder):
        return {type(m).__name__ for m in encoder.backbone.modules() if isinstance(m, nn.Dropout)}

    assert kinds(SentenceEncoder.from_pretrained(str(tiny_bert))) == {"FastDropout"}
    assert kinds(SentenceEncoder.from_pretrained(str(tiny_bert), fast_dropout=False)) == {"Dropout"}


@pytest.mark.parametrize("fast", [True, False])
def test_model_dropout_sets_every_rate_attention_included(tiny_bert, fast):
    """``model.dropout=0`` must silence every dropout, the attention's too (BERT's attention reads its
    module's ``p``): two train-mode passes then give the same vectors. At the base's own rate they differ.
    The config (what an export writes) keeps the base's rates."""
    from luse.model.encoder import SentenceEncoder

    texts = ["a short one", "another sentence here"]

    def two_passes(encoder):
        encoder.train()
        batch = encoder.tokenize(texts)
        torch.manual_seed(0)
        return encoder(**batch), encoder(**batch)

    base = SentenceEncoder.from_pretrained(str(tiny_bert), fast_dropout=fast)
    assert not torch.allclose(*two_passes(base))
    silent = SentenceEncoder.from_pretrained(str(tiny_bert), fast_dropout=fast, dropout=0.0)
    torch.testing.assert_close(*two_passes(silent))
    rates = {m.p for m in silent.backbone.modules() if isinstance(m, nn.Dropout)}
    assert rates == {0.0}
    assert silent.backbone.config.hidden_dropout_prob == base.backbone.config.hidden_dropout_prob > 0
    assert silent.backbone.config.attention_probs_dropout_prob > 0


def test_set_dropout_rejects_rates_outside_0_1():
    from luse.model.dropout import set_dropout

    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        set_dropout(nn.Sequential(nn.Dropout(0.1)), 1.0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1), nn.Sequential(nn.Dropout(0.2)))
    assert set_dropout(model, 0.3) == 2 and {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.3}
