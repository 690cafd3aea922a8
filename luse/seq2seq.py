"""RoFormer-Sim (SimBERTv2): one BERT/RoFormer that both encodes sentences and generates similar ones.

The model is a Hugging Face encoder (``BertModel``, ``RoFormerModel``) plus the masked-LM head of
its ``*ForMaskedLM`` class, whose decoder is tied to the input embeddings. Trained on pairs of
similar sentences ``(a, b)`` with UniLM's seq2seq trick: ONE forward over
``[CLS] a [SEP] b [SEP]`` with token types 0/1 and an attention mask in which the source ``a``
attends both ways and the target ``b`` attends to the source and to its own past, so the LM head
learns to write ``b`` given ``a``.

The sentence vector is the [CLS] state. In the UniLM mask [CLS] sees only the source, so the
same forward yields the CLS vector of ``a``; following SimBERT, every pair enters the batch in
both orders, ``a -> b`` and ``b -> a``, and the two rows' CLS vectors are the positives of an
in-batch contrastive loss (:func:`luse.losses.luse_loss` with two views: each row must pick out
its partner among the other ``2B - 1`` rows). BART-style noise: a share of the source's tokens
becomes [MASK] (the target stays clean), so the model learns to write a similar sentence from a
damaged one. The CLS vectors therefore come from the noised sources, as in the seed's single
training step.

Exports (:func:`export_seq2seq`) are plain ``*ForMaskedLM`` checkpoints: loadable for generation
(``BertForMaskedLM`` / ``RoFormerForMaskedLM``, or ``BertLMHeadModel`` / ``RoFormerForCausalLM``,
which share the weight names) and as ``BertModel`` / ``RoFormerModel`` for the CLS vector.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from luse.encoder import SentenceEncoder
from luse.errors import InputError

logger = logging.getLogger("luse")

SEQ2SEQ_POOLING = "cls"


# --- masks -------------------------------------------------------------------------------------

def unilm_attention_mask(token_type_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """UniLM seq2seq mask ``[B, L, L]`` (bool, True = query row may attend to key column).

    Segment ids are cumulated along the sequence: every source token (type 0) gets 0, the
    target tokens (type 1) get 1, 2, 3, ... A query attends to a key whose cumulated id is not
    larger than its own: the source sees the whole source, each target token sees the source and
    the target up to itself. Padding keys are never attended.
    """
    order = torch.cumsum(token_type_ids.long(), dim=1)
    allowed = order[:, None, :] <= order[:, :, None]
    return allowed & attention_mask.bool()[:, None, :]


def extended_mask(allowed: torch.Tensor, backbone) -> torch.Tensor:
    """``[B, L, L]`` bool -> the ``[B, 1, L, L]`` mask the backbone's attention takes as given.

    Hugging Face models pass a 4-D mask through unchanged. SDPA attention takes booleans;
    eager attention (RoFormer's, BERT's ``eager``) *adds* the mask to the scores, so it gets 0 /
    a very negative number.
    """
    allowed = allowed[:, None]
    if getattr(backbone.config, "_attn_implementation", "eager") == "sdpa":
        return allowed
    blocked = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device)
    return blocked.masked_fill(~allowed, torch.finfo(torch.float32).min)


def lm_targets(input_ids: torch.Tensor, token_type_ids: torch.Tensor,
               attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the LM head predicts and what: position ``i`` predicts token ``i + 1`` when that
    token is a (non-padding) target token. Returns ``(predict [B, L] bool, targets [N])``."""
    is_target = (token_type_ids == 1) & attention_mask.bool()
    predict = torch.zeros_like(is_target)
    predict[:, :-1] = is_target[:, 1:]
    return predict, input_ids[:, 1:][is_target[:, 1:]]


def bart_noise(token_ids: Sequence[int], rate: float, mask_id: int, rng: random.Random) -> list[int]:
    """Each token becomes ``mask_id`` with probability ``rate`` (BART-style input noise)."""
    if rate <= 0:
        return list(token_ids)
    return [mask_id if rng.random() < rate else t for t in token_ids]


# --- model -------------------------------------------------------------------------------------

class Seq2SeqModel(SentenceEncoder):
    """A :class:`SentenceEncoder` (CLS pooling) whose backbone also carries a tied LM head.

    ``model(**inputs)`` gives sentence vectors exactly like a SentenceEncoder (so ``encode``, the
    evaluator and the exporters work); ``model(**inputs, seq2seq=True, predict=mask)`` runs the
    UniLM forward and returns ``(cls_vectors, logits at the predict positions)``.
    """

    def __init__(self, mlm_model, tokenizer, max_length: int = 64):
        prefix = mlm_model.base_model_prefix
        super().__init__(getattr(mlm_model, prefix), tokenizer, pooling=SEQ2SEQ_POOLING, max_length=max_length)
        heads = [module for name, module in mlm_model.named_children() if name != prefix]
        if len(heads) != 1:
            raise ValueError(f"{type(mlm_model).__name__}: expected one LM head module next to {prefix!r}")
        self.lm_head = heads[0]
        # (SentenceEncoder froze RoFormer's fixed rotary table.)
        # Not a submodule (its modules are backbone + lm_head already): kept for save_pretrained.
        self.__dict__["mlm_model"] = mlm_model

    @classmethod
    def from_pretrained(cls, name_or_path: str, max_length: int = 64,
                        attn_implementation: str | None = "sdpa", **_: Any) -> Seq2SeqModel:
        """Load a BERT or RoFormer checkpoint, with its LM head if it has one (else a new head, logged)."""
        from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

        from luse.resources import resolve_model

        path = resolve_model(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        config.is_decoder = False  # *ForCausalLM checkpoints: our own mask does the causal part
        config.tie_word_embeddings = True
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        try:
            mlm, info = AutoModelForMaskedLM.from_pretrained(path, config=config, output_loading_info=True, **kwargs)
        except (ValueError, ImportError):  # no SDPA for this architecture (RoFormer): eager
            mlm, info = AutoModelForMaskedLM.from_pretrained(path, config=config, output_loading_info=True)
        prefix = mlm.base_model_prefix
        new_head = sorted(k for k in info.get("missing_keys", ()) if not k.startswith(prefix + "."))
        if new_head:
            logger.warning("%s has no LM head: started a new one (tied to the input embeddings; "
                           "initialised: %s)", name_or_path, ", ".join(new_head))
        model = cls(mlm, tokenizer, max_length=max_length)
        model.new_lm_head = bool(new_head)
        return model

    def seq2seq_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[B, L, H]`` under the UniLM mask."""
        mask = extended_mask(unilm_attention_mask(token_type_ids, attention_mask), self.backbone)
        outputs = self.backbone(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids,
                                return_dict=True)
        return outputs.last_hidden_state

    def seq2seq_step(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, cache) -> torch.Tensor:
        """Incremental decoding: hidden states ``[B, q, H]`` of the ``q = input_ids.shape[1]`` newest
        tokens, given a key/value ``cache`` (a ``transformers.DynamicCache``, updated in place) of the
        earlier ones. ``token_type_ids`` covers the whole sequence so far, the new tokens last; no padding."""
        q = input_ids.shape[1]
        allowed = unilm_attention_mask(token_type_ids, torch.ones_like(token_type_ids))[:, -q:]
        outputs = self.backbone(input_ids=input_ids, attention_mask=extended_mask(allowed, self.backbone),
                                token_type_ids=token_type_ids[:, -q:], past_key_values=cache, return_dict=True)
        return outputs.last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, pooling: str | None = None,
                seq2seq: bool = False, predict: torch.Tensor | None = None):
        if not seq2seq:
            return super().forward(input_ids, attention_mask, token_type_ids, pooling)
        if token_type_ids is None:
            raise ValueError("seq2seq=True needs token_type_ids (0: source, 1: target)")
        hidden = self.seq2seq_hidden(input_ids, attention_mask, token_type_ids)
        states = hidden if predict is None else hidden[predict]
        return hidden[:, 0], self.lm_head(states)


def check_pooling(pooling: str) -> None:
    if pooling != SEQ2SEQ_POOLING:
        raise InputError("config", f"model.pooling={SEQ2SEQ_POOLING} for a seq2seq (RoFormer-Sim) model: "
                         "its sentence vector is the [CLS] state", pooling)


def load_seq2seq(path: str | os.PathLike, max_length: int | None = None) -> Seq2SeqModel:
    """A seq2seq model from an export (``luse.json`` gives max_length) or any BERT/RoFormer checkpoint."""
    from luse.export import read_export_info

    info = read_export_info(path) if Path(path).is_dir() else None
    return Seq2SeqModel.from_pretrained(os.fspath(path), max_length=max_length or (info or {}).get("max_length", 64))


# --- training objective ------------------------------------------------------------------------

def read_similar_pairs(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """Pairs of similar sentences from ``.jsonl`` (``text1/text2``, ``a/b``, ``sentence1/sentence2``,
    ``text_a/text_b``, ``s1/s2``, ``anchor/positive``, ``query/pos``; other keys ignored), ``.tsv``
    (``a<TAB>b``) or ``.csv`` (a header naming one of those column pairs).

    Raises:
        InputError: at the first malformed line, naming the file, the line and the accepted forms.
    """
    from luse.data import supervised as sv

    keys = (("text1", "text2"), ("a", "b"), ("sentence1", "sentence2"), ("text_a", "text_b"), ("s1", "s2"),
            ("anchor", "positive"), ("query", "pos"))
    path, kind = sv._open_format(path)
    forms = " or ".join("/".join(k) for k in keys)
    if kind == "jsonl":
        return sv._jsonl_records(path, lambda record: sv._triplet_from_mapping(record, keys),
                                 f"a JSON object with string fields {forms}")
    if kind == "tsv":
        return sv._tsv_records(path, 2, lambda row: tuple(row) if all(sv._is_text(f) for f in row) else None,
                               keys, "2 tab-separated non-empty columns (sentence<TAB>similar sentence)")
    return sv._csv_records(path, keys, (), f"a header naming the columns {forms}")


class RoFormerSimObjective:
    """UniLM generation loss + in-batch contrastive loss on CLS, in one forward per batch.

    Each pair ``(a, b)`` gives two rows, ``[CLS] noise(a) [SEP] b [SEP]`` and
    ``[CLS] noise(b) [SEP] a [SEP]``; rows ``2i`` and ``2i + 1`` hold the CLS vectors of ``a`` and
    ``b``. Loss = ``lm_weight * CE(target tokens) + contrastive_weight * luse_loss(CLS pairs)``.
    """

    kind = "seq2seq_pairs"

    def __init__(self, tokenizer, max_length: int, mask_rate: float = 0.15, lm_weight: float = 1.0,
                 contrastive_weight: float = 1.0, temperature: float = 0.05, gather: bool = True):
        if not 0 <= mask_rate < 1:
            raise InputError("config", "seq2seq.mask_rate in [0, 1)", mask_rate)
        self.tokenizer, self.max_length, self.mask_rate = tokenizer, max_length, mask_rate
        self.lm_weight, self.contrastive_weight = lm_weight, contrastive_weight
        self.temperature, self.gather = temperature, gather

    def collate(self, rows: list[tuple], rng: random.Random) -> dict:
        tok = self.tokenizer
        texts = [text for row in rows for text in row[:2]]
        # Each sentence keeps max_length - 2 tokens: the length a sentence has when encoded alone.
        ids = tok(texts, add_special_tokens=False, truncation=True, max_length=self.max_length - 2)["input_ids"]
        sequences = []
        for i in range(0, len(ids), 2):
            for source, target in ((ids[i], ids[i + 1]), (ids[i + 1], ids[i])):
                noised = bart_noise(source, self.mask_rate, tok.mask_token_id, rng)
                sequences.append(([tok.cls_token_id, *noised, tok.sep_token_id], [*target, tok.sep_token_id]))
        return pack_pairs(sequences, tok.pad_token_id)

    def model_loss(self, model, inputs: dict, batch: dict) -> torch.Tensor:
        from luse.losses import luse_loss

        predict, targets = lm_targets(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
        cls, logits = model(**inputs, seq2seq=True, predict=predict)
        loss = self.lm_weight * F.cross_entropy(logits.float(), targets)
        if self.contrastive_weight:
            views = cls.float().view(-1, 2, cls.shape[-1])
            loss = loss + self.contrastive_weight * luse_loss(views, self.temperature, gather=self.gather)
        return loss


def pack_pairs(sequences: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(source ids, target ids) rows -> right-padded ``input_ids``, ``token_type_ids`` (0/1), ``attention_mask``."""
    width = max(len(s) + len(t) for s, t in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros_like(input_ids)
    attention_mask = torch.zeros_like(input_ids)
    for row, (source, target) in enumerate(sequences):
        n, m = len(source), len(target)
        input_ids[row, :n + m] = torch.tensor([*source, *target])
        token_type_ids[row, n:n + m] = 1
        attention_mask[row, :n + m] = 1
    return {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}


# --- recipe wiring -----------------------------------------------------------------------------

def build_roformer_sim_model(config) -> Seq2SeqModel:
    """``run_recipe`` build_model: the seq2seq model from ``config.model``."""
    check_pooling(config.model.pooling)
    return Seq2SeqModel.from_pretrained(config.model.name_or_path, max_length=config.model.max_length,
                                        attn_implementation=config.model.attn_implementation)


def build_roformer_sim_task(config, tokenizer):
    """``run_recipe`` build_task: pairs from ``data.corpus`` and the RoFormer-Sim objective."""
    from luse.runner import in_memory_items

    if config.loss.name != "roformer_sim":
        raise InputError("config", "loss.name=roformer_sim for the roformer_sim recipe", config.loss.name)
    rows = [row for path in config.data.corpus for row in read_similar_pairs(path)]
    if not rows:
        raise InputError(", ".join(config.data.corpus) or "data.corpus", "at least one pair of similar sentences")
    s2s = config.seq2seq
    objective = RoFormerSimObjective(tokenizer, config.model.max_length, mask_rate=s2s.mask_rate,
                                     lm_weight=s2s.lm_weight, contrastive_weight=s2s.contrastive_weight,
                                     temperature=config.loss.temperature, gather=config.loss.gather)
    return objective, in_memory_items(rows, config.seed)


# --- export ------------------------------------------------------------------------------------

def export_seq2seq(model: Seq2SeqModel, out_dir: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write ``model`` as a plain ``*ForMaskedLM`` checkpoint + tokenizer + ``luse.json`` (atomic).

    The directory loads with ``BertForMaskedLM`` / ``RoFormerForMaskedLM`` (or the ``*ForCausalLM``
    classes) for generation and with ``BertModel`` / ``RoFormerModel`` / ``AutoModel`` for the
    sentence vector ``output[0][:, 0]``; it is also a sentence-transformers model (CLS pooling).
    """
    from luse import __version__
    from luse.atomic import atomic_dir
    from luse.export import (
        FORMAT_VERSION,
        LUSE_FILE,
        _plain_json,
        _save_sentence_transformers_modules,
        _write_json,
    )

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "a directory to export into", got="an existing file")
    plain = _plain_json(dict(metadata or {}), "metadata")
    mlm = model.mlm_model
    with atomic_dir(out_dir) as folder:
        mlm.save_pretrained(folder)
        model.tokenizer.save_pretrained(folder)
        _save_sentence_transformers_modules(model, folder)
        _write_json(folder / LUSE_FILE, {
            "format": FORMAT_VERSION, "luse_version": __version__, "pooling": model.pooling,
            "max_length": model.max_length, "hidden_size": model.hidden_size,
            "backbone": type(model.backbone).__name__, "generation": type(mlm).__name__,
            "sentence_transformers": True, "metadata": plain,
        })
        (folder / "README.md").write_text(_model_card(model, out_dir.name), encoding="utf-8")
    return out_dir


def _model_card(model: Seq2SeqModel, name: str) -> str:
    backbone, mlm = type(model.backbone).__name__, type(model.mlm_model).__name__
    return f"""---
library_name: transformers
tags:
- luse
- roformer-sim
- sentence-embeddings
---
# {name}

A RoFormer-Sim (SimBERTv2) model trained with luse: a `{backbone}` with a tied LM head (`{mlm}`) that
generates similar sentences (UniLM seq2seq) and encodes sentences (the [CLS] state,
{model.hidden_size} dimensions; compare with cosine similarity).

```
luse generate ./{name} "广州和深圳哪个好？" -n 100 -k 20
```

```python
from transformers import AutoModel, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("./{name}")
model = AutoModel.from_pretrained("./{name}").eval()  # {backbone}
batch = tokenizer(["今天天气很好"], return_tensors="pt")
vectors = model(**batch)[0][:, 0]
```
"""
