"""RoFormer-Sim (SimBERTv2) on pairs of similar sentences: UniLM generation + in-batch contrastive loss on CLS.

The model and its input format are in :mod:`luse.model.seq2seq`.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from luse.config import TrainConfig
from luse.errors import InputError
from luse.losses import luse_loss
from luse.model.seq2seq import bart_noise, lm_targets, pack_pairs


class RoFormerSimObjective:
    """UniLM generation loss + in-batch contrastive loss on CLS, in one forward per batch.

    Each pair ``(a, b)`` gives two rows, ``[CLS] noise(a) [SEP] b [SEP]`` and
    ``[CLS] noise(b) [SEP] a [SEP]``; rows ``2i`` and ``2i + 1`` hold the CLS vectors of ``a`` and
    ``b``. Loss = ``lm_weight * CE(target tokens) + contrastive_weight * luse_loss(CLS pairs)``.
    """

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
        predict, targets = lm_targets(inputs["input_ids"], inputs["token_type_ids"], inputs["attention_mask"])
        cls, logits = model(**inputs, seq2seq=True, predict=predict)
        loss = self.lm_weight * F.cross_entropy(logits.float(), targets)
        if self.contrastive_weight:
            views = cls.float().view(-1, 2, cls.shape[-1])
            loss = loss + self.contrastive_weight * luse_loss(views, self.temperature, gather=self.gather)
        return loss


def roformer_sim_objective(config: TrainConfig, tokenizer) -> RoFormerSimObjective:
    """The objective of ``seq2seq.*`` (weights, BART noise) with ``loss.temperature`` and ``loss.gather``."""
    s2s = config.seq2seq
    return RoFormerSimObjective(tokenizer, config.model.max_length, mask_rate=s2s.mask_rate,
                                lm_weight=s2s.lm_weight, contrastive_weight=s2s.contrastive_weight,
                                temperature=config.loss.temperature, gather=config.loss.gather)
