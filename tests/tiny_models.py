"""Tiny random checkpoints built on the spot, so the tests need no hub and no downloads."""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# A domain's worth of distinct sentences and the overrides that train a recipe on them in seconds
# (benchmarks/domains.py and screen.py run the real recipe in a subprocess).
SENTENCES = ["今天天气很好我们去公园散步", "他在图书馆里安静地看书", "这家餐厅的菜味道非常不错", "我明天要坐火车去北京出差",
             "孩子们在操场上踢足球", "她每天早上都喝一杯咖啡", "这本小说的结局让人意外", "银行今天下午三点关门"]
TINY_RUN = ["batch_size=4", "data.min_chars=2", "data.shuffle_buffer=4", "model.max_length=16", "eval.every=0",
            "data.num_workers=0", "threads=1"]


def write_vocab(path: Path) -> Path:
    """Special tokens, ASCII, punctuation and every CJK unified ideograph (character-level Chinese)."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation + "，。！？、；：“”（）《》")
    chars += [chr(c) for c in range(0x4E00, 0x9FA6)]
    path.write_text("\n".join(SPECIAL + chars) + "\n", encoding="utf-8")
    return path


def make_tiny_model(out: Path, kind: str = "bert", seed: int = 0, hidden: int = 32, layers: int = 2,
                    dropout: float = 0.1) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast, RoFormerConfig, RoFormerModel

    out.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(out / "vocab.txt")
    tokenizer = BertTokenizerFast(vocab=str(vocab), do_lower_case=True, tokenize_chinese_chars=True)
    size = tokenizer.vocab_size
    common = dict(vocab_size=size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                  intermediate_size=hidden * 2, max_position_embeddings=128,
                  hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(seed)
    if kind == "bert":
        model = BertModel(BertConfig(**common))
    elif kind == "roformer":
        model = RoFormerModel(RoFormerConfig(embedding_size=hidden, **common))
    else:
        raise ValueError(kind)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
