"""Cross-encoder training: pairs ``(first, second, target)`` in one tokenised block of pairs, BCE or MSE on
the head's logit. The model is :class:`luse.model.cross_encoder.CrossEncoder`."""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from luse.errors import InputError
from luse.model.cross_encoder import LOSS_ACTIVATION


class CrossEncoderObjective:
    """Pairs ``(first, second, target)`` -> one tokenised block of pairs; BCE or MSE on the head's logit."""

    def __init__(self, tokenizer, max_length: int, loss_name: str):
        if loss_name not in LOSS_ACTIVATION:  # read_config(losses=...) refuses others with the recipe to use
            raise ValueError(f"a cross-encoder loss ({', '.join(LOSS_ACTIVATION)}), not {loss_name!r}")
        self.tokenizer, self.max_length, self.loss_name = tokenizer, max_length, loss_name

    def collate(self, rows: list[tuple], rng: random.Random) -> dict:
        batch = dict(self.tokenizer([r[0] for r in rows], [r[1] for r in rows], padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt"))
        batch["labels"] = torch.tensor([float(r[2]) for r in rows])
        return batch

    def model_loss(self, model, inputs: dict, batch: dict) -> torch.Tensor:
        logits = model(**inputs)[:, 0].float()
        targets = batch["labels"].to(logits.device)
        if self.loss_name == "cross_bce":
            return F.binary_cross_entropy_with_logits(logits, targets)
        return F.mse_loss(logits, targets)


def cross_pairs(path: str, loss_name: str) -> Iterator[tuple[str, str, float]]:
    """The pairs of ``path`` (:func:`luse.data.supervised.read_pairs`), with labels in [0, 1] for
    ``cross_bce``."""
    from luse.data.supervised import read_pairs

    for number, row in enumerate(read_pairs(path), start=1):
        if loss_name == "cross_bce" and not 0.0 <= row[2] <= 1.0:
            raise InputError(path, "labels in [0, 1] for loss.name=cross_bce (rescale the scores, "
                             "or use loss.name=cross_mse)", got=f"{row[2]} in pair {number}")
        yield row
