"""The exact savings of luse/fastpath.py: same vectors and gradients as the plain forward."""

from __future__ import annotations

import pytest
import torch

from luse.model.encoder import SentenceEncoder
from luse.model.fastpath import length_chunks, supports_fast_forward
from tests.tiny_models import make_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Lengths from 1 to ~40 characters, so chunks of 4 rows have very different widths.
TEXTS = ["短", "今天天气很好", "我们去公园散步吧，好吗", "a b c", "这是一个比较长的句子，用来测试按长度分块的前向计算是否正确",
         "中文", "人民日报社论", "一二三四五六七八九十一二三四五六七八九十", "好", "机器学习"]


# (unpad, cls_only, chunk_rows): each saving alone, and all of them together.
SAVINGS = [(True, True, 4), (True, False, 0), (False, True, 0), (False, False, 4)]


def encoders(path, pooling, attn="sdpa", savings=SAVINGS[0]):
    unpad, cls_only, chunk_rows = savings
    plain = SentenceEncoder.from_pretrained(str(path), pooling=pooling, attn_implementation=attn,
                                            chunk_rows=0, cls_only=False, unpad=False)
    fast = SentenceEncoder.from_pretrained(str(path), pooling=pooling, attn_implementation=attn,
                                           chunk_rows=chunk_rows, cls_only=cls_only, unpad=unpad)
    return plain, fast


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("bert-no-dropout"), "bert", layers=3, dropout=0.0)


@pytest.mark.parametrize("savings", SAVINGS)
@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean", "first_last_avg"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_vectors_equal_plain_forward(tiny_bert, pooling, attn, savings):
    plain, fast = encoders(tiny_bert, pooling, attn, savings)
    assert (fast.unpad, fast.cls_only) == savings[:2]
    inputs = plain.tokenize(TEXTS)
    assert length_chunks(inputs["attention_mask"], 4) is not None  # the chunked path really runs
    plain.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(**inputs), plain(**inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_left_padding(tiny_bert, pooling):
    """[CLS] poolings read a padding column with left padding: the plain forward runs; mean needs no care."""
    plain, fast = encoders(tiny_bert, pooling)
    for encoder in (plain, fast):
        encoder.tokenizer.padding_side = "left"
    inputs = plain.tokenize(TEXTS)
    assert not bool(inputs["attention_mask"][:, 0].all())
    plain.eval(), fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(**inputs), plain(**inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("savings", SAVINGS)
@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean"])
def test_gradients_equal_plain_forward(no_dropout_bert, pooling, savings):
    plain, fast = encoders(no_dropout_bert, pooling, savings=savings)
    grads = []
    for encoder in (plain, fast):
        encoder.double().train()  # float64: any difference left is a real one, not rounding
        inputs = encoder.tokenize(TEXTS)
        vectors = encoder(**inputs)
        # Any loss that mixes rows: a wrong row order after the chunks would change it.
        (vectors @ vectors.T).logsumexp(dim=1).mul(torch.arange(len(TEXTS)) + 1.0).sum().backward()
        grads.append({name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-9, atol=1e-12, msg=name)


def test_dropout_still_makes_views_differ(tiny_bert):
    _, fast = encoders(tiny_bert, "cls")
    fast.train()
    inputs = fast.tokenize(TEXTS)
    first, second = fast(**inputs), fast(**inputs)
    assert not torch.allclose(first, second)  # SimCSE's positives come from this difference
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(fast(**inputs), fast(**inputs))


def test_state_dict_untouched_and_errors_surface(tiny_bert):
    plain, fast = encoders(tiny_bert, "cls")
    fast(**fast.tokenize(TEXTS))
    assert fast.state_dict().keys() == plain.state_dict().keys()
    with pytest.raises((IndexError, RuntimeError)):
        fast(input_ids=torch.full((2, 3), 10**6), attention_mask=torch.ones(2, 3, dtype=torch.long))


def test_other_architectures_run_the_plain_forward(tiny_roformer):
    plain, fast = encoders(tiny_roformer, "cls")
    assert not supports_fast_forward(fast.backbone) and not fast.cls_only and not fast.unpad
    plain.eval(), fast.eval()
    inputs = plain.tokenize(TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(fast(**inputs), plain(**inputs), rtol=1e-5, atol=1e-5)


def test_length_chunks_cover_every_row_once():
    lengths = torch.tensor([3, 9, 1, 9, 4, 2, 8, 5, 7])
    mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
    chunks = length_chunks(mask, 4)
    rows = torch.cat([members for members, _ in chunks])
    assert sorted(rows.tolist()) == list(range(9))
    assert [width for _, width in chunks] == [4, 9, 9]  # sorted lengths 1 2 3 4 | 5 7 8 9 | 9
    for members, width in chunks:
        assert int(lengths[members].max()) == width
    assert length_chunks(mask, 9) is None  # one chunk: nothing to split
    assert length_chunks(mask, 0) is None  # switched off
    assert length_chunks(torch.ones(8, 5, dtype=torch.long), 2) is None  # no padding to cut


def test_left_padding_keeps_full_width():
    mask = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]])
    chunks = length_chunks(mask, 2)
    assert chunks is None or all(width == 3 for _, width in chunks)
