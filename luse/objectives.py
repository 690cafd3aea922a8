"""Training objectives: how a batch of items becomes texts, and how their embeddings become a loss.

Every objective turns its items into ONE tokenised block of texts (so the encoder runs one
forward pass over all views, and GradCache can chunk it), and computes its loss from the
embeddings of that block. The trainer never needs to know which objective it runs.

``views``      unlabelled sentences; each gives itself + EDA views + dropout copies (LUSE, SimCSE-unsup)
``triplets``   (anchor, positive, hard negative) rows (SimCSE-sup)
``pairs``      (sentence1, sentence2, score) rows (CoSENT)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

from luse.config import LossConfig, ViewsConfig
from luse.losses import cosent_loss, luse_loss, simcse_sup_loss, simcse_unsup_loss


def tokenize_unique(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Tokenise each distinct text once and repeat rows (dropout copies share their tokens)."""
    position: dict[str, int] = {}
    rows = [position.setdefault(t, len(position)) for t in texts]
    encoded = tokenizer(list(position), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
    index = torch.tensor(rows)
    return {k: v.index_select(0, index) for k, v in encoded.items()}


class ViewsObjective:
    """Each sentence is encoded ``1 + eda + generated + dropout`` times: the sentence, its EDA
    views, its pre-generated paraphrases (``paraphraser``, e.g. :class:`augment.paraphrases.ParaphraseViews`)
    and copies of the sentence that differ only by dropout. Rows are sentence-major, so the
    embeddings reshape to ``[B, V, H]``."""

    kind = "views"

    def __init__(self, tokenizer, max_length: int, views: ViewsConfig, loss: LossConfig,
                 augmenter: Callable[[str, int, random.Random], list[str]] | None = None,
                 paraphraser: Callable[[str, int, random.Random], list[str]] | None = None):
        self.tokenizer, self.max_length, self.loss_config = tokenizer, max_length, loss
        self.n_eda, self.n_dropout = views.eda, views.dropout
        self.augmenter = augmenter
        if self.n_eda and augmenter is None:
            raise ValueError("views.eda > 0 needs an augmenter (EDA)")
        self.n_generated, self.paraphraser = views.generated, paraphraser
        if self.n_generated and paraphraser is None:
            raise ValueError("views.generated > 0 needs a paraphraser (views.paraphrases=FILE)")
        self.num_views = 1 + self.n_eda + self.n_generated + self.n_dropout
        if self.num_views < 2:
            raise ValueError("a views objective needs at least 2 views: set views.dropout or views.eda")
        if loss.name == "simcse_unsup" and self.num_views != 2:
            raise ValueError(f"simcse_unsup takes exactly 2 views per sentence, got {self.num_views}; "
                             "use loss.name=luse for more")

    def collate(self, sentences: list[str], rng: random.Random) -> dict:
        texts = []
        for sentence in sentences:
            texts.append(sentence)
            if self.n_eda:
                texts.extend(self.augmenter(sentence, self.n_eda, rng))
            if self.n_generated:
                texts.extend(self.paraphraser(sentence, self.n_generated, rng))
            texts.extend([sentence] * self.n_dropout)
        return tokenize_unique(self.tokenizer, texts, self.max_length)

    def loss(self, embeddings: torch.Tensor, batch: dict, extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
        views = embeddings.view(-1, self.num_views, embeddings.shape[-1])
        if self.loss_config.name == "simcse_unsup":
            return simcse_unsup_loss(views, self.loss_config.temperature, gather=self.loss_config.gather,
                                     extra_negatives=extra_negatives)
        return luse_loss(views, self.loss_config.temperature, gather=self.loss_config.gather,
                         extra_negatives=extra_negatives, positives=self.loss_config.positives)

    def positive_rows(self, batch: dict) -> torch.Tensor:
        """Rows a momentum encoder encodes (:mod:`luse.momentum`): each sentence's own text, view 0."""
        return torch.arange(0, batch["input_ids"].shape[0], self.num_views)


class TripletObjective:
    """SimCSE supervised: anchors, positives and (optional) hard negatives in one block."""

    kind = "triplets"

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
        """Rows a momentum encoder encodes (:mod:`luse.momentum`): the positive column."""
        rows = batch["input_ids"].shape[0] // batch["columns"]
        return torch.arange(rows, 2 * rows)


class PairsObjective:
    """CoSENT over scored pairs: rank the pairs' cosines in the order of their scores."""

    kind = "pairs"

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


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
