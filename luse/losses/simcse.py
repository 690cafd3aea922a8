r"""SimCSE losses: in-batch contrastive learning with one positive per anchor.

From Gao, Yao and Chen, *SimCSE: Simple Contrastive Learning of Sentence Embeddings*
(EMNLP 2021, https://arxiv.org/abs/2104.08821; reference code: princeton-nlp/SimCSE).

Supervised form: anchors ``a_i``, positives ``p_i`` and optional hard negatives ``n_i``. Each
anchor is classified against every positive and every hard negative of the batch:

.. math::

    z_{ij} = \cos(a_i, p_j) / \tau, \qquad
    w_{ij} = \cos(a_i, n_j) / \tau + \alpha \, [i = j], \qquad
    \ell_i = -\log \frac{e^{z_{ii}}}{\sum_j e^{z_{ij}} + \sum_j e^{w_{ij}}}

where ``alpha`` (``hard_negative_weight``) is added to the logit of the anchor's *own* hard negative,
as in the reference code (the paper reports ``alpha = 0`` works best for its NLI data). Without hard
negatives the second sum disappears and this is the in-batch negatives loss that
sentence-transformers calls ``MultipleNegativesRankingLoss``.

Unsupervised form: the positive of a sentence is a second encoding of the *same* sentence with a
different dropout mask: view 0 are the anchors, view 1 the candidates, no hard negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from luse.errors import InputError
from luse.losses.distributed import gather_with_grad, global_mean_share
from luse.losses.luse import DEFAULT_TEMPERATURE, check_extra_negatives, require_positive


def simcse_sup_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None = None,
                    temperature: float = DEFAULT_TEMPERATURE, hard_negative_weight: float = 0.0,
                    gather: bool = True, extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised SimCSE: cross-entropy over all positives and hard negatives of the batch.

    Args:
        anchor: embeddings ``[B, H]``.
        positive: embeddings ``[B, H]``; row ``i`` is the positive of ``anchor[i]`` and a negative
            for every other anchor.
        negative: optional hard negatives ``[B, H]``; row ``i`` belongs to ``anchor[i]`` and is a
            negative for every anchor. ``None`` leaves only the in-batch negatives.
        temperature: divides the cosine similarities (0.05, as in SimCSE).
        hard_negative_weight: added to the logit of each anchor's own hard negative (0.0, the
            reference default); needs ``negative``.
        gather: score this process's anchors against the positives and hard negatives of every
            process (:func:`luse.losses.distributed.gather_with_grad`); a no-op without a process group.
        extra_negatives: optional ``[K, H]`` negatives for every anchor (a momentum queue, see
            :mod:`luse.objectives.momentum`), appended as the last columns; never gathered.

    Returns:
        A scalar: the mean over this process's anchors (with ``gather`` and unequal shares across
        processes, this process's share of the global mean).

    Raises:
        InputError: mismatched or non-2-D shapes, an empty batch, ``temperature <= 0``, or a
            non-zero ``hard_negative_weight`` without ``negative``.
    """
    _check_pair("simcse_sup_loss: positive", anchor, positive)
    if negative is not None:
        _check_pair("simcse_sup_loss: negative", anchor, negative)
    elif hard_negative_weight != 0:
        raise InputError("simcse_sup_loss: hard_negative_weight", "0.0 when no hard negatives are given",
                         got=hard_negative_weight)
    require_positive("simcse_sup_loss: temperature", temperature)

    anchors = F.normalize(anchor, dim=-1)
    # One gather for positives and negatives together: a single collective instead of two.
    local = torch.stack([positive] if negative is None else [positive, negative], dim=1)
    local = F.normalize(local, dim=-1)
    candidates, offset = gather_with_grad(local) if gather else (local, 0)
    n_candidates = candidates.shape[0]

    # Columns: all positives first, then all hard negatives (the reference code's layout).
    logits = torch.cat([anchors @ candidates[:, kind].T for kind in range(candidates.shape[1])], dim=1)
    if extra_negatives is not None:
        check_extra_negatives("simcse_sup_loss: extra_negatives", extra_negatives, anchors.shape[1])
        extra = F.normalize(extra_negatives.to(anchors.dtype), dim=-1)
        logits = torch.cat([logits, anchors @ extra.T], dim=1)
    logits = logits / temperature
    targets = torch.arange(len(anchors), device=anchor.device) + offset
    if hard_negative_weight != 0:
        own_negative = F.one_hot(targets + n_candidates, num_classes=logits.shape[1]).to(logits.dtype)
        logits = logits + hard_negative_weight * own_negative
    per_anchor = F.cross_entropy(logits, targets, reduction="none")

    if not gather:
        return per_anchor.mean()
    return global_mean_share(per_anchor, n_candidates)


def simcse_unsup_loss(views: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE,
                      gather: bool = True, extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
    """Unsupervised SimCSE: view 0 of each sentence must pick out its own view 1.

    Args:
        views: embeddings ``[B, 2, H]``: two encodings of each sentence (different dropout masks).
        temperature: divides the cosine similarities (0.05, as in SimCSE).
        gather: use the view-1 embeddings of every process as candidates.
        extra_negatives: optional ``[K, H]`` negatives for every anchor (see :func:`simcse_sup_loss`).

    Returns:
        A scalar: the mean cross-entropy over this process's ``B`` anchors (see
        :func:`simcse_sup_loss` for the multi-process case).

    Raises:
        InputError: ``views`` is not ``[B, 2, H]`` with ``B >= 1``, or ``temperature <= 0``.

    Unlike :func:`luse.losses.luse_loss` with ``V = 2``, only view 1 serves as candidates and only
    view 0 as anchors, exactly as in the SimCSE reference code.
    """
    if views.dim() != 3 or views.shape[0] < 1 or views.shape[1] != 2:
        raise InputError("simcse_unsup_loss: views", "a tensor of shape [batch >= 1, 2, hidden]",
                         got=tuple(views.shape))
    require_positive("simcse_unsup_loss: temperature", temperature)
    return simcse_sup_loss(views[:, 0], views[:, 1], None, temperature=temperature, gather=gather,
                           extra_negatives=extra_negatives)


def _check_pair(where: str, anchor: torch.Tensor, other: torch.Tensor) -> None:
    if anchor.dim() != 2 or anchor.shape[0] < 1:
        raise InputError("simcse_sup_loss: anchor", "a tensor of shape [batch >= 1, hidden]",
                         got=tuple(anchor.shape))
    if other.shape != anchor.shape:
        raise InputError(where, f"the anchor's shape {tuple(anchor.shape)}", got=tuple(other.shape))


class SimCSESupLoss(nn.Module):
    """:func:`simcse_sup_loss` as a module; ``forward(anchor, positive, negative=None) -> scalar``.

    Args:
        temperature: softmax temperature over cosine similarities.
        hard_negative_weight: added to the logit of each anchor's own hard negative.
        gather: use the candidates of every process.
    """

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, hard_negative_weight: float = 0.0,
                 gather: bool = True):
        super().__init__()
        require_positive("SimCSESupLoss: temperature", temperature)
        self.temperature = temperature
        self.hard_negative_weight = hard_negative_weight
        self.gather = gather

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor | None = None,
                extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
        return simcse_sup_loss(anchor, positive, negative, temperature=self.temperature,
                               hard_negative_weight=self.hard_negative_weight, gather=self.gather,
                               extra_negatives=extra_negatives)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, hard_negative_weight={self.hard_negative_weight}, "
                f"gather={self.gather}")


class SimCSEUnsupLoss(nn.Module):
    """:func:`simcse_unsup_loss` as a module; ``forward(views) -> scalar``.

    Args:
        temperature: softmax temperature over cosine similarities.
        gather: use the candidates of every process.
    """

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, gather: bool = True):
        super().__init__()
        require_positive("SimCSEUnsupLoss: temperature", temperature)
        self.temperature = temperature
        self.gather = gather

    def forward(self, views: torch.Tensor, extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
        return simcse_unsup_loss(views, temperature=self.temperature, gather=self.gather,
                                 extra_negatives=extra_negatives)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}"
