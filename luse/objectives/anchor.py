"""Stay near the base: similarity distillation from a frozen copy of the base, added to another objective.

Unsupervised contrastive training on a domain's text can pull an encoder away from what its base already
did well, and it keeps drifting the longer it runs. The anchor adds, to the wrapped objective's loss,

    loss.anchor_weight * similarity_distill_loss(student vectors, base vectors)

over the batch's sentences themselves (view 0 of a views objective; otherwise each distinct text once, so
dropout copies count once): text views add no teacher forward. With ``sentences=k`` it distils over k of
them, evenly spaced through the batch (batches of one length band are sorted by length, so the k span it):
the teacher's forward is the anchor's cost (what fewer sentences save and lose:
``benchmarks/results/default_speed.md``, ``domains_selection.md``). The student keeps the *relations*
between sentences that the base gives (their cosine matrix, :mod:`luse.losses.distill`), free in rotation
and scale, while the contrastive loss adapts it to the domain.

The base is read in the pooling it was trained with (``loss.anchor_pooling=auto``: what its files
declare, :func:`luse.model.export.declared_pooling`). For a base trained with mean pooling (m3e, MiniLM
sentence-transformers) the student's CLS vector thus learns the base's better mean vector, so the
exported CLS / pooler contract does not cost quality. Measured in ``benchmarks/results/domains.md``.
"""

from __future__ import annotations

import copy

import torch

from luse.losses.distill import similarity_distill_loss
from luse.objectives.base import select_rows

#: Hooks of the wrapped objective that the anchor passes through unchanged.
PASSED_THROUGH = ("after_optimizer_step", "state_dict", "load_state_dict", "positive_rows")


def distinct_rows(input_ids: torch.Tensor) -> torch.Tensor:
    """Index of the first row of each distinct token sequence, in row order."""
    _, inverse = torch.unique(input_ids, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), input_ids.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse.cpu(), torch.arange(input_ids.shape[0]), reduce="amin")
    return first.sort().values


def evenly_spaced(rows: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` of ``rows``, spread evenly from the first on (all of them when ``count`` is 0 or too many)."""
    if count <= 0 or count >= len(rows):
        return rows
    return rows[torch.arange(count) * len(rows) // count]


class AnchorObjective:
    """``objective``'s loss plus ``weight`` x similarity distillation toward a frozen copy of the model
    as it is at :meth:`setup` (the base: setup runs before a resumed run loads its checkpoint)."""

    def __init__(self, objective, weight: float, pooling: str, sentences: int = 0):
        if weight <= 0:
            raise ValueError(f"anchor weight must be > 0, got {weight}")
        self.objective, self.weight, self.pooling, self.sentences = objective, weight, pooling, sentences
        self.collate = objective.collate  # workers get the inner method, not the teacher
        for name in PASSED_THROUGH:
            if hasattr(objective, name):
                setattr(self, name, getattr(objective, name))
        self.base = None
        self._autocast = None

    def setup(self, accelerator, model) -> None:
        if hasattr(self.objective, "setup"):
            self.objective.setup(accelerator, model)
        base = copy.deepcopy(accelerator.unwrap_model(model))
        base.mlp = None  # a train-only MLP is not part of the base's vector
        self.base = base.eval().requires_grad_(False)
        self._autocast = accelerator.autocast

    def loss(self, embeddings: torch.Tensor, batch: dict) -> torch.Tensor:
        loss = self.objective.loss(embeddings, batch)
        rows = (self.objective.positive_rows(batch) if hasattr(self.objective, "positive_rows")
                else distinct_rows(batch["input_ids"]))
        rows = evenly_spaced(rows, self.sentences)
        inputs = select_rows(batch, rows, embeddings.device)
        with torch.no_grad(), self._autocast():
            target = self.base(**inputs, pooling=self.pooling)
        student = embeddings.index_select(0, rows.to(embeddings.device))
        return loss + similarity_distill_loss(student.float(), target.float(), weight=self.weight)


def with_anchor(loss_config, model_config, objective):
    """``objective`` anchored to the base when ``loss.anchor_weight > 0``."""
    if not loss_config.anchor_weight:
        return objective
    from luse.io import resolve_model
    from luse.model.export import declared_pooling

    pooling = loss_config.anchor_pooling
    if pooling == "auto":
        pooling = declared_pooling(resolve_model(model_config.name_or_path), model_config.pooling)
    return AnchorObjective(objective, loss_config.anchor_weight, pooling, loss_config.anchor_sentences)
