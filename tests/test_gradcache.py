"""GradCache must give the gradients of one ordinary pass over the whole batch."""

import pytest
import torch

from luse.losses import luse_loss
from luse.model.encoder import SentenceEncoder
from luse.train.gradcache import grad_cache_step

SENTENCES = ["今天天气很好", "我们去公园散步", "他在读一本书", "猫坐在垫子上", "明天会下雨吗", "这家店的咖啡不错"]
VIEWS = 3


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _setup(tiny_bert, dropout: bool):
    torch.manual_seed(0)
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert), pooling="cls", attn_implementation="eager")
    if not dropout:
        for module in encoder.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    encoder.double().train()  # float64: compare the maths, not float32 summation order
    texts = [s for s in SENTENCES for _ in range(VIEWS)]
    inputs = encoder.tokenize(texts)
    loss_fn = lambda emb: luse_loss(emb.view(len(SENTENCES), VIEWS, -1), 0.05)  # noqa: E731
    return encoder, inputs, loss_fn


@pytest.mark.parametrize("chunk", [1, 4, 7, 100])
def test_grad_cache_equals_full_batch_without_dropout(tiny_bert, chunk):
    encoder, inputs, loss_fn = _setup(tiny_bert, dropout=False)
    loss = loss_fn(encoder(**inputs))
    loss.backward()
    expected, expected_loss = _grads(encoder), loss.detach()
    encoder.zero_grad()
    got_loss = grad_cache_step(encoder, inputs, loss_fn, chunk_size=chunk)
    got = _grads(encoder)
    assert torch.allclose(got_loss, expected_loss, atol=1e-10)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-10, rtol=1e-7), name


def test_grad_cache_replays_dropout(tiny_bert):
    """With dropout on, the re-encoding pass must draw the same masks as the cached pass: the
    gradients then equal an ordinary chunked pass under the same seed (not a fresh draw)."""
    encoder, inputs, loss_fn = _setup(tiny_bert, dropout=True)
    chunk = 5
    torch.manual_seed(123)
    parts = [encoder(**{k: v[i:i + chunk] for k, v in inputs.items()}) for i in range(0, len(inputs["input_ids"]), chunk)]
    loss = loss_fn(torch.cat(parts))
    loss.backward()
    expected, expected_loss = _grads(encoder), loss.detach()
    state_after_plain = torch.get_rng_state()
    encoder.zero_grad()

    torch.manual_seed(123)
    got_loss = grad_cache_step(encoder, inputs, loss_fn, chunk_size=chunk)
    got = _grads(encoder)
    assert torch.allclose(got_loss, expected_loss, atol=1e-10)
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-10, rtol=1e-7), name
    # The RNG ends where one pass would have left it.
    assert torch.equal(torch.get_rng_state(), state_after_plain)

    # And dropout really is on: a different seed gives a different loss.
    encoder.zero_grad()
    torch.manual_seed(7)
    assert not torch.allclose(grad_cache_step(encoder, inputs, loss_fn, chunk_size=chunk), expected_loss)
