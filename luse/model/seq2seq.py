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

import contextlib
import functools
import inspect
import logging
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from luse.config import ModelConfig
from luse.errors import InputError
from luse.model.encoder import SentenceEncoder

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
                        attn_implementation: str | None = "sdpa", log_new_head: bool = True,
                        **_: Any) -> Seq2SeqModel:
        """Load a BERT or RoFormer checkpoint, with its LM head if it has one (else a new head, logged
        unless ``log_new_head`` is false; ``new_lm_head`` says which)."""
        from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

        from luse.io import resolve_model

        path = resolve_model(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        config.is_decoder = False  # *ForCausalLM checkpoints: our own mask does the causal part
        config.tie_word_embeddings = True
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        with _quiet_load_report():  # what it says is said below, minus what is expected here
            try:
                mlm, info = AutoModelForMaskedLM.from_pretrained(path, config=config, output_loading_info=True,
                                                                 **kwargs)
            except (ValueError, ImportError):  # no SDPA for this architecture (RoFormer): eager
                mlm, info = AutoModelForMaskedLM.from_pretrained(path, config=config, output_loading_info=True)
        prefix = mlm.base_model_prefix
        missing = sorted(info.get("missing_keys", ()))
        new_head = [k for k in missing if not k.startswith(prefix + ".")]
        if new_head and log_new_head:
            logger.warning("%s has no LM head: started a new one (tied to the input embeddings; "
                           "initialised: %s)", name_or_path, ", ".join(new_head))
        # Anything else transformers' load report would have shown is not expected: say so.
        lost = [k for k in missing if k.startswith(prefix + ".")]
        unused = sorted(k for k in info.get("unexpected_keys", ()) if not _is_pooler(k, prefix))
        mismatched = [str(k[0] if isinstance(k, (tuple, list)) else k) for k in info.get("mismatched_keys", ())]
        for what, keys in (("missing from the checkpoint, initialised at random", lost),
                           ("in the checkpoint but not used", unused), ("of another shape, not loaded", mismatched)):
            if keys:
                logger.warning("%s: %d weights %s: %s", name_or_path, len(keys), what, ", ".join(keys[:10])
                               + (", ..." if len(keys) > 10 else ""))
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
                                token_type_ids=token_type_ids[:, -q:], return_dict=True,
                                **{_cache_argument(type(self.backbone)): cache})
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


@functools.cache
def _cache_argument(backbone_class: type) -> str:
    """The name ``backbone_class.forward`` takes the key/value cache by: ``cache`` in recent transformers
    (``past_key_values`` is deprecated there, with a FutureWarning), ``past_key_values`` before."""
    parameters = inspect.signature(backbone_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def _is_pooler(key: str, prefix: str) -> bool:
    """An encoder checkpoint's pooler, which a ``*ForMaskedLM`` has no use for (expected, not reported)."""
    return key.startswith(("pooler.", f"{prefix}.pooler."))


class _LoadWarnings(logging.Filter):
    """Drops ``transformers.modeling_utils``'s warnings (errors pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """transformers' load report (a table of missing / unexpected keys) and its warning that a checkpoint
    without an LM head "seem[s] corrupted" (both halves of the tied head bias are absent) are warnings of
    ``transformers.modeling_utils``; dropped while our loader runs, which reports the keys itself (a new
    head in one line, anything unexpected in another). Errors still pass; the logger's level is left
    alone (transformers reads it to decide what to check)."""
    loader_logger, quiet = logging.getLogger("transformers.modeling_utils"), _LoadWarnings()
    loader_logger.addFilter(quiet)
    try:
        yield
    finally:
        loader_logger.removeFilter(quiet)


def check_pooling(pooling: str) -> None:
    if pooling != SEQ2SEQ_POOLING:
        raise InputError("config", f"model.pooling={SEQ2SEQ_POOLING} for a seq2seq (RoFormer-Sim) model: "
                         "its sentence vector is the [CLS] state", pooling)


def load_seq2seq(path: str | os.PathLike, max_length: int | None = None, *,
                 need_lm_head: bool = False) -> Seq2SeqModel:
    """A seq2seq model from an export (``luse.json`` gives max_length) or any BERT/RoFormer checkpoint.

    Raises:
        InputError: ``need_lm_head`` (generation) and the checkpoint has no LM head: a new, random one
            would write random text, which the model's own encoder would still score.
    """
    from luse.model.export import read_export_info

    if need_lm_head and checkpoint_has_lm_head(path) is False:  # refused before transformers' load report
        _no_lm_head(path)
    info = read_export_info(path) if Path(path).is_dir() else None
    model = Seq2SeqModel.from_pretrained(os.fspath(path), max_length=max_length or (info or {}).get("max_length", 64),
                                         log_new_head=not need_lm_head)
    if need_lm_head and model.new_lm_head:
        _no_lm_head(path)
    return model


def _no_lm_head(path) -> None:
    raise InputError(path, "a checkpoint with an LM head (a roformer_sim export, a *ForMaskedLM or "
                           "*LMHeadModel checkpoint)", got="a sentence encoder without one",
                     hint="train one with recipes/roformer_sim.py, or distil a generator with recipes/distill.py")


def checkpoint_has_lm_head(path: str | os.PathLike) -> bool | None:
    """Whether the local checkpoint ``path`` holds weights of its ``*ForMaskedLM`` class's head, read
    from the weight names alone (safetensors, sharded or not); None when that cannot be told (a hub
    name, ``.bin`` weights, an architecture without a masked-LM class)."""
    import json

    from transformers import AutoConfig, AutoModelForMaskedLM

    from luse.io import resolve_model

    folder = Path(resolve_model(os.fspath(path)))
    if not (folder / "config.json").is_file():
        return None
    if (folder / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(folder / "model.safetensors", "pt") as weights:
            names = list(weights.keys())
    elif (folder / "model.safetensors.index.json").is_file():
        names = list(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"])
    else:
        return None
    try:
        config = AutoConfig.from_pretrained(folder)
        mlm_class = AutoModelForMaskedLM._model_mapping[type(config)]
        with torch.device("meta"):
            heads = [name for name, _ in mlm_class(config).named_children() if name != mlm_class.base_model_prefix]
    except (KeyError, ValueError, OSError):
        return None
    return any(name.split(".", 1)[0] in heads for name in names)


# --- the UniLM input format -------------------------------------------------------------------

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


def seq2seq_from_config(model: ModelConfig) -> Seq2SeqModel:
    """The seq2seq model a run's ``model.*`` keys describe (its pooling must be ``cls``)."""
    check_pooling(model.pooling)
    return Seq2SeqModel.from_pretrained(model.name_or_path, max_length=model.max_length,
                                        attn_implementation=model.attn_implementation)


# --- export ------------------------------------------------------------------------------------

def export_seq2seq(model: Seq2SeqModel, out_dir: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write ``model`` as a plain ``*ForMaskedLM`` checkpoint + tokenizer + ``luse.json`` (atomic).

    The directory loads with ``BertForMaskedLM`` / ``RoFormerForMaskedLM`` (or the ``*ForCausalLM``
    classes) for generation and with ``BertModel`` / ``RoFormerModel`` / ``AutoModel`` for the
    sentence vector ``output[0][:, 0]``; it is also a sentence-transformers model (CLS pooling).
    """
    from luse import __version__
    from luse.io import atomic_dir
    from luse.model.export import (
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
