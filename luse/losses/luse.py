r"""LUSE: a multi-positive listwise contrastive loss.

From Dun Zhang, *LUSE: 无监督数据预训练短文本编码模型* (pretraining a short-text encoder on
unlabelled data; code: https://github.com/DunZhang/LUSE), which builds on his article
*一种基于均值不等式的Listwise损失函数* (a listwise loss from the AM-GM inequality).

Every sentence comes with ``V`` views (the sentence itself, EDA rewrites, extra dropout passes...).
All ``B * V`` embeddings of the batch are anchors in turn; for anchor ``i`` of sentence ``s(i)``:

.. math::

    p_i(j) = \frac{\exp(\cos(e_i, e_j) / \tau)}{\sum_{k \ne i} \exp(\cos(e_i, e_k) / \tau)}, \qquad
    \ell_i = -\frac{1}{V - 1} \sum_{j \ne i,\ s(j) = s(i)} \log p_i(j), \qquad
    L = \frac{1}{B V} \sum_i \ell_i

that is, the cross-entropy between a soft target that gives each of the ``V - 1`` other views of
the same sentence probability ``1 / (V - 1)`` and the softmax over every other embedding of the
batch; the anchor itself is left out of the softmax. Why share the probability equally: by the
AM-GM inequality, ``prod_j p_i(j) <= (sum_j p_i(j) / (V - 1)) ** (V - 1) <= (V - 1) ** -(V - 1)``,
with equality exactly when the positives split the mass 1 evenly and the negatives get none.
The smallest reachable loss is therefore ``log(V - 1)`` (0 only for ``V = 2``, where LUSE is the
SimCLR / NT-Xent loss).

``positives="each"`` is the variant where positives do not compete: every positive ``j`` of
anchor ``i`` gets its own softmax over itself and the negatives (the other views of ``s(i)`` left
out), ``l_i = -1/(V-1) sum_j log(exp(c_ij/t) / (exp(c_ij/t) + sum_{n: s(n) != s(i)} exp(c_in/t)))``,
as in multi-crop contrastive learning.  The shared target above also asks the positives to be
*equally* similar to the anchor, so with many near-identical views (dropout copies) most of its
gradient goes into evening out their similarities; ``each`` only pulls every positive in and
pushes the negatives away.  For ``V = 2`` both are the same loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from luse.errors import InputError
from luse.losses.distributed import gather_with_grad, global_mean_share

DEFAULT_TEMPERATURE = 0.05
POSITIVES = ("share", "each")


def require_positive(where: str, value: float) -> None:
    """Raise :class:`~luse.errors.InputError` unless ``value`` is a number > 0 (a temperature, a scale)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(where, "a number > 0", got=value)


def luse_loss(views: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE, gather: bool = True,
              extra_negatives: torch.Tensor | None = None, positives: str = "share") -> torch.Tensor:
    """LUSE multi-positive listwise loss over ``V`` views of each sentence.

    Args:
        views: embeddings of shape ``[B, V, H]``: ``B`` sentences, ``V >= 2`` views each.
            They need not be normalised: the loss scores cosine similarities.
        temperature: divides the cosine similarities before the softmax (0.05, as in SimCSE).
        gather: score this process's anchors against the embeddings of *every* process
            (:func:`luse.losses.distributed.gather_with_grad`); a no-op without a process group.
        extra_negatives: optional ``[K, H]`` embeddings that are negatives for every anchor (a
            momentum queue, :mod:`luse.objectives.momentum`); added to every softmax denominator, never
            gathered (every process holds the same ones) and usually without gradient.
        positives: ``"share"`` (LUSE's target: the positives split probability 1 evenly, one softmax
            per anchor) or ``"each"`` (a softmax per positive, over it and the negatives alone).

    Returns:
        A scalar: the mean over this process's ``B * V`` anchors (with ``gather`` and unequal
        shares across processes, this process's share of the global mean; see
        :func:`luse.losses.distributed.global_mean_share`).

    Raises:
        InputError: ``views`` is not ``[B, V, H]`` with ``B >= 1`` and ``V >= 2``, ``temperature <= 0``,
            ``extra_negatives`` is not ``[K, H]``, or ``positives`` is neither ``share`` nor ``each``.

    Example::

        >>> views = torch.randn(8, 3, 32)           # 8 sentences, 3 views, hidden size 32
        >>> loss = luse_loss(views, temperature=0.05)
    """
    if views.dim() != 3 or views.shape[0] < 1 or views.shape[1] < 2:
        raise InputError("luse_loss: views", "a tensor of shape [batch >= 1, views >= 2, hidden]",
                         got=tuple(views.shape))
    require_positive("luse_loss: temperature", temperature)
    if positives not in POSITIVES:
        raise InputError("luse_loss: positives", " or ".join(POSITIVES), got=positives)
    batch, n_views, hidden = views.shape
    local = F.normalize(views, dim=-1)
    candidates, offset = gather_with_grad(local) if gather else (local, 0)

    # Rows are sentence-major: embedding r is view r % V of sentence r // V.
    anchors = local.reshape(batch * n_views, hidden)
    candidates = candidates.reshape(-1, hidden)
    n_anchors_global = candidates.shape[0]
    if extra_negatives is not None:
        check_extra_negatives("luse_loss: extra_negatives", extra_negatives, hidden)
        # Appended after the batch: their ids never match an anchor's, so they are never self or positive.
        candidates = torch.cat([candidates, F.normalize(extra_negatives.to(candidates.dtype), dim=-1)])
    logits = anchors @ candidates.T / temperature

    anchor_ids = torch.arange(batch * n_views, device=views.device) + offset * n_views
    candidate_ids = torch.arange(candidates.shape[0], device=views.device)
    is_self = anchor_ids[:, None] == candidate_ids[None, :]
    same_sentence = (anchor_ids[:, None] // n_views) == (candidate_ids[None, :] // n_views)

    is_positive = same_sentence & ~is_self
    if positives == "share":
        log_probs = logits.masked_fill(is_self, float("-inf")).log_softmax(dim=1)
    else:
        # log(e^c / (e^c + N)) with N the negatives' mass, for every entry (only positives are kept).
        negatives = logits.masked_fill(same_sentence, float("-inf")).logsumexp(dim=1, keepdim=True)
        log_probs = logits - torch.logaddexp(logits, negatives)
    # masked_fill (not multiplication) so the -inf self entries never turn into NaN.
    positive_log_probs = log_probs.masked_fill(~is_positive, 0.0)
    per_anchor = -positive_log_probs.sum(dim=1) / (n_views - 1)

    if not gather:
        return per_anchor.mean()
    return global_mean_share(per_anchor, n_anchors_global)


def check_extra_negatives(where: str, extra: torch.Tensor, hidden: int) -> None:
    """Raise :class:`~luse.errors.InputError` unless ``extra`` is a ``[K, hidden]`` tensor."""
    if extra.dim() != 2 or extra.shape[1] != hidden:
        raise InputError(where, f"a tensor of shape [K, {hidden}]", got=tuple(extra.shape))


class LuseLoss(nn.Module):
    """:func:`luse_loss` as a module holding its hyper-parameters; ``forward(views) -> scalar``.

    Args:
        temperature: softmax temperature over cosine similarities.
        gather: use the embeddings of every process as candidates.
    """

    def __init__(self, temperature: float = DEFAULT_TEMPERATURE, gather: bool = True, positives: str = "share"):
        super().__init__()
        require_positive("LuseLoss: temperature", temperature)
        self.temperature = temperature
        self.gather = gather
        self.positives = positives

    def forward(self, views: torch.Tensor, extra_negatives: torch.Tensor | None = None) -> torch.Tensor:
        return luse_loss(views, temperature=self.temperature, gather=self.gather, extra_negatives=extra_negatives,
                         positives=self.positives)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gather={self.gather}, positives={self.positives!r}"
