"""A sentence encoder around any Hugging Face encoder checkpoint.

The encoder is a backbone (``AutoModel``: BERT, RoFormer, ...) plus a pooling rule that turns
token states into one vector per sentence, plus SimCSE's optional MLP that only exists while
training.  Everything that leaves the model (``encode``, the export) uses the same pooling, so
what you train is what you ship.

Poolings
--------
``pooler``          BERT's own pooler (dense + tanh over [CLS]). The default, because a plain
                    ``BertModel(...)[1]`` (``pooler_output``) then gives exactly the trained vector.
``cls``             the [CLS] hidden state: ``BertModel(...)[0][:, 0]``.
``mean``            masked mean of the last hidden states.
``first_last_avg``  masked mean of (first layer + last layer) / 2, as in SimCSE / BERT-flow.

The forward skips work the vector never uses (:mod:`luse.model.fastpath`): a BERT's per-token layers run
on real tokens only, with ``cls``/``pooler`` its last layer computes [CLS] alone, and long padded
blocks run as length-sorted chunks.  On a CPU, dropout draws its masks 64 bits at a time
(:mod:`luse.model.dropout`): the dropout views cost a fraction of torch's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from luse.config import ModelConfig
from luse.io import resolve_model
from luse.model.dropout import set_dropout, use_fast_dropout
from luse.model.fastpath import bert_forward, length_chunks, supports_fast_forward

POOLINGS = ("pooler", "cls", "mean", "first_last_avg")
DEFAULT_POOLING = "pooler"
CLS_POOLINGS = ("pooler", "cls")  # read the last layer's [CLS] position only
DEFAULT_CHUNK_ROWS = 64


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def pool(outputs, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Turn a Hugging Face model output into one vector per sentence."""
    if pooling == "cls":
        return outputs.last_hidden_state[:, 0]
    if pooling == "pooler":
        if getattr(outputs, "pooler_output", None) is None:
            raise ValueError("pooling='pooler' needs a backbone with a pooler (BERT); use 'cls' for this model")
        return outputs.pooler_output
    if pooling == "mean":
        return masked_mean(outputs.last_hidden_state, attention_mask)
    if pooling == "first_last_avg":
        # hidden_states[0] is the embedding layer; [1] is the first transformer layer.
        first, last = outputs.hidden_states[1], outputs.hidden_states[-1]
        return masked_mean((first + last) / 2, attention_mask)
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")


class SentenceEncoder(nn.Module):
    """Backbone + pooling (+ SimCSE's train-only MLP).

    ``forward`` takes tokenised input and returns sentence vectors; ``encode`` takes strings.
    The MLP (dense + tanh, as in SimCSE) is applied only in training mode and never exported.
    ``unpad``, ``cls_only`` and ``chunk_rows`` (0: off) switch the exact savings of :mod:`luse.model.fastpath`,
    ``fast_dropout`` the cheaper CPU dropout of :mod:`luse.model.dropout` (its modules are swapped in the
    backbone, which changes no weight).
    """

    def __init__(self, backbone: nn.Module, tokenizer, pooling: str = DEFAULT_POOLING,
                 mlp: bool = False, max_length: int = 64, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 cls_only: bool = True, unpad: bool = True, fast_dropout: bool = True,
                 dropout: float | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.chunk_rows = chunk_rows
        fast = supports_fast_forward(backbone)
        self.cls_only = cls_only and fast
        self.unpad = unpad and fast
        self.fast_dropout = fast_dropout
        if dropout is not None:
            set_dropout(backbone, dropout)
        if fast_dropout:
            use_fast_dropout(backbone)
        hidden = backbone.config.hidden_size
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh()) if mlp else None
        if pooling == "pooler" and getattr(backbone, "pooler", None) is None:
            raise ValueError(
                f"pooling='pooler' needs a backbone with a pooler layer, and {type(backbone).__name__} has none; "
                "use pooling=cls"
            )
        if pooling != "pooler" and isinstance(getattr(backbone, "pooler", None), nn.Module):
            # The pooler gets no gradient with another pooling; trainable, it would make DDP fail
            # ("parameters that did not receive grad") as soon as two processes train. It is kept
            # (and exported) as loaded.
            backbone.pooler.requires_grad_(False)
        # RoFormer's rotary table is a fixed sinusoid stored as a parameter: never trained, and
        # under DDP a parameter that gets no gradient is an error.
        for name, param in backbone.named_parameters():
            if "embed_positions" in name:
                param.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: str = DEFAULT_POOLING, mlp: bool = False,
                        max_length: int = 64, attn_implementation: str | None = "sdpa",
                        chunk_rows: int = DEFAULT_CHUNK_ROWS, cls_only: bool = True,
                        unpad: bool = True, fast_dropout: bool = True,
                        dropout: float | None = None) -> SentenceEncoder:
        """Load a local directory or hub name (``m3e-small`` is the offline built-in)."""
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
        try:
            backbone = AutoModel.from_pretrained(path, **kwargs)
        except (ValueError, ImportError):  # architectures without SDPA support fall back to eager
            backbone = AutoModel.from_pretrained(path)
        return cls(backbone, tokenizer, pooling=pooling, mlp=mlp, max_length=max_length,
                   chunk_rows=chunk_rows, cls_only=cls_only, unpad=unpad, fast_dropout=fast_dropout,
                   dropout=dropout)

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Dynamic padding: pad to the longest sentence of this batch, not to max_length."""
        return dict(self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None, pooling: str | None = None) -> torch.Tensor:
        pooling = pooling or self.pooling
        chunks = length_chunks(attention_mask, self.chunk_rows)
        if chunks is None:
            vectors = self._pooled(input_ids, attention_mask, token_type_ids, pooling)
        else:
            parts, order = [], []
            for rows, width in chunks:
                parts.append(self._pooled(input_ids[rows, :width], attention_mask[rows, :width],
                                          None if token_type_ids is None else token_type_ids[rows, :width], pooling))
                order.append(rows)
            # Back to the caller's row order: the loss pairs rows by position.
            vectors = torch.cat(parts)[torch.argsort(torch.cat(order))]
        if self.mlp is not None and self.training:
            vectors = self.mlp(vectors)
        return vectors

    def _pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None, pooling: str) -> torch.Tensor:
        reads_cls = pooling in CLS_POOLINGS
        cls_only = self.cls_only and reads_cls
        # luse.model.fastpath reads [CLS] at column 0 as it computes it; with left padding that column is
        # padding, whose state only the plain forward has.
        fast = (self.unpad or cls_only) and not (reads_cls and not bool(attention_mask[:, 0].all()))
        if fast:
            outputs = bert_forward(self.backbone, input_ids, attention_mask, token_type_ids, unpad=self.unpad,
                                   cls_only=cls_only, output_hidden_states=pooling == "first_last_avg",
                                   fast_dropout=self.fast_dropout)
        else:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
            outputs = self.backbone(**inputs, output_hidden_states=pooling == "first_last_avg", return_dict=True)
        return pool(outputs, attention_mask, pooling)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64, normalize: bool = False,
               pooling: str | None = None, show_progress: bool = False) -> np.ndarray:
        """Sentence vectors as a float32 array, in input order (eval mode: no dropout, no MLP)."""
        was_training = self.training
        self.eval()
        # Sorting by length keeps padding (and so wasted compute) small.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        chunks = []
        steps = range(0, len(texts), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="encode", unit="batch")
        for start in steps:
            batch = [texts[i] for i in order[start:start + batch_size]]
            inputs = {k: v.to(self.device) for k, v in self.tokenize(batch).items()}
            chunks.append(self(**inputs, pooling=pooling).float().cpu())
        self.train(was_training)
        if not chunks:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        vectors = torch.empty(len(texts), chunks[0].shape[1])
        vectors[torch.tensor(order)] = torch.cat(chunks)
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.numpy()


def encoder_from_config(model: ModelConfig) -> SentenceEncoder:
    """The sentence encoder a run's ``model.*`` keys describe, every key honoured (the fast path's
    ``chunk_rows``, ``cls_only``, ``unpad`` and ``fast_dropout`` included)."""
    return SentenceEncoder.from_pretrained(model.name_or_path, pooling=model.pooling, mlp=model.mlp,
                                           max_length=model.max_length,
                                           attn_implementation=model.attn_implementation,
                                           chunk_rows=model.chunk_rows, cls_only=model.cls_only,
                                           unpad=model.unpad, fast_dropout=model.fast_dropout,
                                           dropout=model.dropout)
