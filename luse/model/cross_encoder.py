"""Cross-encoders: score a sentence pair by reading both sentences together.

A bi-encoder (:class:`~luse.model.encoder.SentenceEncoder`) embeds each sentence alone, so a corpus can be
indexed; a cross-encoder feeds ``[CLS] a [SEP] b [SEP]`` through one transformer and a
classification head, which is slower (every pair is a forward pass) but more accurate
(../shared/seeds/004). luse uses one to check mined hard negatives (:mod:`luse.mining.negatives`):
a candidate the cross-encoder scores high is probably an unlabelled positive, not a negative.

Any Hugging Face sequence-classification checkpoint works (``AutoModelForSequenceClassification``):

* ``num_labels=1``: the score is ``sigmoid(logit)`` (a probability, for heads trained with binary
  cross-entropy, as most public rerankers are) or the raw logit (``activation="identity"``, for
  heads regressed onto scores with MSE). Models trained here record which in their ``config.json``
  (``luse_score_activation``), so loading them needs no option.
* ``num_labels=2``: the score is the softmax probability of label 1 (the "similar" class).

``recipes/cross_encoder.py`` trains one from labelled or scored pairs (``loss.name=cross_bce``:
binary cross-entropy on labels in ``[0, 1]``; ``cross_mse``: mean squared error on any scores),
with the training loop, checkpoints and resume of every other recipe; its export is a plain
``save_pretrained`` directory (model + tokenizer).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from luse.io import resolve_model

ACTIVATIONS = ("sigmoid", "identity")
ACTIVATION_KEY = "luse_score_activation"  # recorded in config.json by models trained here
LOSS_ACTIVATION = {"cross_bce": "sigmoid", "cross_mse": "identity"}
METADATA_FILE = "luse_cross_encoder.json"


class CrossEncoder(nn.Module):
    """A sequence-classification model + tokenizer that scores sentence pairs.

    Args:
        model: a Hugging Face ``*ForSequenceClassification`` model with 1 or 2 labels.
        tokenizer: its tokenizer (pairs are tokenised as ``tokenizer(first, second)``).
        max_length: pairs are truncated to this many tokens together.
        activation: for 1-label heads, ``sigmoid`` or ``identity``; default: the one recorded in
            the model's config, else ``sigmoid``.
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 128, activation: str | None = None):
        super().__init__()
        num_labels = model.config.num_labels
        if num_labels not in (1, 2):
            raise ValueError(f"a cross-encoder needs a head with 1 or 2 labels, this one has {num_labels}")
        activation = activation or getattr(model.config, ACTIVATION_KEY, None) or "sigmoid"
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown score activation {activation!r}; expected one of {', '.join(ACTIVATIONS)}")
        self.model, self.tokenizer, self.max_length, self.activation = model, tokenizer, max_length, activation

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, num_labels: int | None = None, max_length: int = 128,
                        activation: str | None = None, attn_implementation: str | None = None) -> CrossEncoder:
        """Load a directory or hub name; ``num_labels`` replaces the head (a new, random one) when it
        differs from the checkpoint's, as when training a cross-encoder from a plain encoder."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = resolve_model(name_or_path)
        kwargs = {}
        if num_labels is not None:
            kwargs.update(num_labels=num_labels, ignore_mismatched_sizes=True)
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
        except (ValueError, ImportError):  # architectures without SDPA fall back to eager
            kwargs.pop("attn_implementation", None)
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
        return cls(model, AutoTokenizer.from_pretrained(path), max_length=max_length, activation=activation)

    @property
    def num_labels(self) -> int:
        return self.model.config.num_labels

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, first: Sequence[str], second: Sequence[str]) -> dict[str, torch.Tensor]:
        """Pairs as one padded block (dynamic padding, truncated to ``max_length`` together)."""
        return dict(self.tokenizer(list(first), list(second), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, num_labels]``."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        return self.model(**inputs, return_dict=True).logits

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """One score per pair from the logits: see the module docstring."""
        logits = logits.float()
        if self.num_labels == 2:
            return logits.softmax(dim=-1)[:, 1]
        return logits[:, 0].sigmoid() if self.activation == "sigmoid" else logits[:, 0]

    @torch.no_grad()
    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32,
                show_progress: bool = False) -> np.ndarray:
        """Scores of ``(first, second)`` pairs as float32, in input order (eval mode: no dropout)."""
        was_training = self.training
        self.eval()
        # Similar lengths together: less padding, and the result does not depend on the order given.
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]), reverse=True)
        out = np.zeros(len(pairs), dtype=np.float32)
        starts = range(0, len(pairs), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="cross-encode", unit="batch")
        for start in starts:
            rows = order[start:start + batch_size]
            inputs = self.tokenize([pairs[i][0] for i in rows], [pairs[i][1] for i in rows])
            logits = self(**{k: v.to(self.device) for k, v in inputs.items()})
            out[rows] = self.scores(logits).cpu().numpy()
        self.train(was_training)
        return out

    def save(self, out_dir: str | Path, *, metadata: dict | None = None) -> Path:
        """``save_pretrained`` of the model and tokenizer into ``out_dir``, atomically; the score
        activation goes into ``config.json``, ``metadata`` into ``luse_cross_encoder.json``."""
        from luse.io import atomic_dir

        setattr(self.model.config, ACTIVATION_KEY, self.activation)
        with atomic_dir(out_dir) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.model_max_length = self.max_length
            self.tokenizer.save_pretrained(tmp)
            record = {"activation": self.activation, "max_length": self.max_length, **(metadata or {})}
            (tmp / METADATA_FILE).write_text(json.dumps(record, ensure_ascii=False, indent=2, default=str),
                                             encoding="utf-8")
        return Path(out_dir)


def load_cross_encoder(name_or_path: str, *, max_length: int | None = None, device: str | None = None) -> CrossEncoder:
    """A cross-encoder for inference: ``max_length`` from the argument, else the one saved by
    :meth:`CrossEncoder.save`, else 128; on ``device`` (default: cuda when available); eval mode."""
    path = Path(resolve_model(name_or_path))
    saved = path / METADATA_FILE
    if max_length is None and saved.is_file():
        max_length = json.loads(saved.read_text(encoding="utf-8")).get("max_length")
    model = CrossEncoder.from_pretrained(str(path), max_length=max_length or 128)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval()


def cross_encoder_from_config(config) -> CrossEncoder:
    """The cross-encoder ``recipes/cross_encoder.py`` trains: ``model.*`` with a fresh 1-logit head whose
    score activation fits ``loss.name`` (sigmoid for cross_bce, the raw logit for cross_mse)."""
    return CrossEncoder.from_pretrained(config.model.name_or_path, num_labels=1,
                                        max_length=config.model.max_length,
                                        activation=LOSS_ACTIVATION[config.loss.name],
                                        attn_implementation=config.model.attn_implementation)


def export_cross_encoder(model: CrossEncoder, out_dir, *, metadata: dict | None = None) -> Path:
    """The recipe's export: :meth:`CrossEncoder.save` (plain ``save_pretrained``, atomic)."""
    return model.save(out_dir, metadata=metadata)
