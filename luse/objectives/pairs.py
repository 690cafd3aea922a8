"""CoSENT over scored pairs (sentence1, sentence2, score): rank the pairs' cosines in the order of their scores."""

from __future__ import annotations

import random

import torch

from luse.config import LossConfig
from luse.losses import cosent_loss
from luse.objectives.base import tokenize_unique


class PairsObjective:
    """Both columns of the pairs in one block; the scores ride along in ``batch["scores"]``."""

    def __init__(self, tokenizer, max_length: int, loss: LossConfig):
        self.tokenizer, self.max_length, self.loss_config = tokenizer, max_length, loss

    def collate(self, rows: list[tuple], rng: random.Random) -> dict:
        texts = [r[0] for r in rows] + [r[1] for r in rows]
        batch = tokenize_unique(self.tokenizer, texts, self.max_length)
        batch["scores"] = torch.tensor([float(r[2]) for r in rows])
        return batch

    def loss(self, embeddings: torch.Tensor, batch: dict) -> torch.Tensor:
        first, second = embeddings.chunk(2)
        return cosent_loss(first, second, batch["scores"].to(embeddings.device), scale=self.loss_config.scale,
                           gather=self.loss_config.gather)
