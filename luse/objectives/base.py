"""What :func:`luse.train.train` needs from an objective: the :class:`Objective` protocol.

An objective turns a batch of items (sentences, pairs, triplets) into ONE tokenised block of texts,
so the encoder runs one forward pass over all of them (and GradCache can chunk it), and turns the
block's embeddings into a loss. It is a plain class with these methods; nothing to inherit.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
"""The batch keys the model reads; an objective may add its own (scores, columns, texts ...)."""


def select_rows(batch: dict, rows: torch.Tensor, device) -> dict[str, torch.Tensor]:
    """The model inputs of ``batch``'s ``rows`` on ``device`` (what a frozen or momentum copy encodes)."""
    return {k: batch[k].index_select(0, rows).to(device) for k in MODEL_INPUTS if k in batch}


class Objective(Protocol):
    """The required methods; the optional hooks are the other fields of :class:`Hooks`.

    ``collate(items, rng) -> batch``
        runs in the DataLoader worker: tokenise the items' texts into one block (``MODEL_INPUTS``)
        plus whatever the loss needs; ``rng`` is seeded per (seed, epoch, batch), so views do not
        depend on the number of workers.
    ``loss(embeddings, batch) -> loss``
        the block's sentence vectors ``[rows, H]`` to a scalar. An objective whose loss needs more
        than the sentence vectors (an LM head, a teacher) has ``model_loss`` instead.
    """

    def collate(self, items: list, rng: random.Random) -> dict: ...

    def loss(self, embeddings: torch.Tensor, batch: dict) -> torch.Tensor: ...


@dataclass(frozen=True)
class Hooks:
    """An objective's methods as :func:`luse.train.train` calls them, looked up once by :func:`hooks`."""

    loss: Callable[[torch.Tensor, dict], torch.Tensor] | None
    # (model, inputs, batch) -> loss: used instead of loss(model(**inputs), batch); not with GradCache.
    model_loss: Callable[[Any, dict, dict], torch.Tensor] | None
    # (accelerator, model): once after accelerator.prepare, before resuming (a momentum copy, a teacher's device).
    setup: Callable[[Any, Any], None] | None
    # (model): after every optimizer step (momentum updates, queue maintenance).
    after_optimizer_step: Callable[[Any], None] | None
    # state_dict() / load_state_dict(state): extra state saved in every checkpoint (a negative queue).
    stateful: bool


def hooks(objective: Objective) -> Hooks:
    """The hooks ``objective`` has. Exactly one of ``loss`` and ``model_loss`` is required."""
    found = Hooks(loss=getattr(objective, "loss", None), model_loss=getattr(objective, "model_loss", None),
                  setup=getattr(objective, "setup", None),
                  after_optimizer_step=getattr(objective, "after_optimizer_step", None),
                  stateful=hasattr(objective, "state_dict") and hasattr(objective, "load_state_dict"))
    if (found.loss is None) == (found.model_loss is None):
        raise TypeError(f"{type(objective).__name__} needs exactly one of loss(embeddings, batch) and "
                        "model_loss(model, inputs, batch)")
    return found


def tokenize_unique(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise each distinct text once and repeat rows (dropout copies share their tokens)."""
    position: dict[str, int] = {}
    rows = [position.setdefault(t, len(position)) for t in texts]
    encoded = tokenizer(list(position), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
    index = torch.tensor(rows)
    return {k: v.index_select(0, index) for k, v in encoded.items()}
