"""SimCSE supervised: (anchor, positive[, hard negative]) rows, all columns in one block."""

from __future__ import annotations

import random

import torch

from luse.config import LossConfig, TrainConfig
from luse.losses import simcse_sup_loss
from luse.objectives.base import tokenize_unique
from luse.objectives.momentum import with_queue


class TripletObjective:
    """Anchors, positives and (optional) hard negatives in one block, column-major."""

    def __init__(self, tokenizer, max_length: int, loss: LossConfig):
        self.tokenizer, self.max_length, self.loss_config = tokenizer, max_length, loss

    def collate(self, rows: list[tuple], rng: random.Random) -> dict:
        has_negative = all(len(r) > 2 and r[2] for r in rows)
        columns = 3 if has_negative else 2
        texts = [r[c] for c in range(columns) for r in rows]  # column-major: a..., p..., n...
        batch = tokenize_unique(self.tokenizer, texts, self.max_length)
        batch["columns"] = columns
        return batch

    def loss(self, embeddings: torch.Tensor, batch: dict, extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
        parts = embeddings.chunk(batch["columns"])
        negative = parts[2] if len(parts) > 2 else None
        return simcse_sup_loss(parts[0], parts[1], negative, temperature=self.loss_config.temperature,
                               hard_negative_weight=self.loss_config.hard_negative_weight,
                               gather=self.loss_config.gather, extra_negatives=extra_negatives)

    def positive_rows(self, batch: dict) -> torch.Tensor:
        """Rows a momentum encoder encodes (:mod:`luse.objectives.momentum`): the positive column."""
        rows = batch["input_ids"].shape[0] // batch["columns"]
        return torch.arange(rows, 2 * rows)


def triplet_objective(config: TrainConfig, tokenizer):
    """The triplet objective, with a momentum queue when ``loss.queue_size > 0``."""
    return with_queue(config.loss, TripletObjective(tokenizer, config.model.max_length, config.loss))
