"""Unlabelled sentences, each encoded as several views that are positives of one another (LUSE, SimCSE-unsup).

Each sentence gives ``1 + views.eda + views.generated + views.repeat + views.dropout`` rows: itself, its EDA
views, its pre-generated paraphrases, its word-repetition views (ESimCSE) and copies of itself that differ
only by dropout. The loss is fixed when the objective is built: ``loss.name=simcse_unsup`` (exactly 2 views)
or ``luse`` (any number).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial

import torch

from luse.augment.repetition import repetition_views
from luse.config import LossConfig, TrainConfig, ViewsConfig
from luse.losses import luse_loss, simcse_unsup_loss
from luse.objectives.anchor import with_anchor
from luse.objectives.base import tokenize_unique
from luse.objectives.momentum import with_queue

Augmenter = Callable[[str, int, random.Random], list[str]]


class ViewsObjective:
    """Each sentence is encoded ``1 + eda + generated + repeat + dropout`` times: the sentence, its EDA
    views, its pre-generated paraphrases (``paraphraser``, e.g.
    :class:`luse.augment.paraphrases.ParaphraseViews`), its word-repetition views
    (:mod:`luse.augment.repetition`) and copies of the sentence that differ only by dropout. Rows are
    sentence-major, so the embeddings reshape to ``[B, V, H]``."""

    def __init__(self, tokenizer, max_length: int, views: ViewsConfig, loss: LossConfig,
                 augmenter: Augmenter | None = None, paraphraser: Augmenter | None = None):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.n_eda, self.n_dropout = views.eda, views.dropout
        self.augmenter = augmenter
        if self.n_eda and augmenter is None:
            raise ValueError("views.eda > 0 needs an augmenter (EDA)")
        self.n_generated, self.paraphraser = views.generated, paraphraser
        if self.n_generated and paraphraser is None:
            raise ValueError("views.generated > 0 needs a paraphraser (views.paraphrases=FILE)")
        self.n_repeat = views.repeat
        self.repeater = repetition_views(views.dup_rate) if views.repeat else None
        self.num_views = 1 + self.n_eda + self.n_generated + self.n_repeat + self.n_dropout
        if self.num_views < 2:
            raise ValueError("a views objective needs at least 2 views: set views.dropout, views.eda or views.repeat")
        if loss.name == "simcse_unsup":
            if self.num_views != 2:
                raise ValueError(f"simcse_unsup takes exactly 2 views per sentence, got {self.num_views}; "
                                 "use loss.name=luse for more")
            self.view_loss = partial(simcse_unsup_loss, temperature=loss.temperature, gather=loss.gather)
        else:
            self.view_loss = partial(luse_loss, temperature=loss.temperature, gather=loss.gather,
                                     positives=loss.positives)

    def collate(self, sentences: list[str], rng: random.Random) -> dict:
        texts = []
        for sentence in sentences:
            texts.append(sentence)
            if self.n_eda:
                texts.extend(self.augmenter(sentence, self.n_eda, rng))
            if self.n_generated:
                texts.extend(self.paraphraser(sentence, self.n_generated, rng))
            if self.n_repeat:
                texts.extend(self.repeater(sentence, self.n_repeat, rng))
            texts.extend([sentence] * self.n_dropout)
        return tokenize_unique(self.tokenizer, texts, self.max_length)

    def loss(self, embeddings: torch.Tensor, batch: dict, extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
        views = embeddings.view(-1, self.num_views, embeddings.shape[-1])
        return self.view_loss(views, extra_negatives=extra_negatives)

    def positive_rows(self, batch: dict) -> torch.Tensor:
        """Rows a momentum encoder encodes (:mod:`luse.objectives.momentum`): each sentence's own text, view 0."""
        return torch.arange(0, batch["input_ids"].shape[0], self.num_views)


def eda_augmenter(views: ViewsConfig) -> Augmenter:
    """EDA views (``views.alpha_*``, ``views.p_rd``) from ``views.synonym_cache``, or the default
    Chinese cache, built on first use."""
    from luse.augment.eda import EDA
    from luse.augment.synonyms.build import load_synonym_cache

    cache = load_synonym_cache(views.synonym_cache, views.language)
    eda = EDA(cache.synonyms, language=views.language, alpha_sr=views.alpha_sr, alpha_ri=views.alpha_ri,
              alpha_rs=views.alpha_rs, p_rd=views.p_rd, extra_words=cache.vocab)
    return eda.views


def views_objective(config: TrainConfig, tokenizer):
    """The views objective ``config`` asks for: EDA views when ``views.eda > 0``, paraphrases when
    ``views.generated > 0``, a momentum queue when ``loss.queue_size > 0``, anchored to the base when
    ``loss.anchor_weight > 0``."""
    views = config.views
    augmenter = eda_augmenter(views) if views.eda else None
    paraphraser = None
    if views.generated:
        from luse.augment.paraphrases import ParaphraseViews

        paraphraser = ParaphraseViews(views.paraphrases)
    objective = ViewsObjective(tokenizer, config.model.max_length, views, config.loss, augmenter, paraphraser)
    return with_anchor(config.loss, config.model, with_queue(config.loss, objective))
