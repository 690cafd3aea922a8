r"""CoSENT: a ranking loss on cosine similarities for scored sentence pairs.

From Su Jianlin (苏剑林), *CoSENT（一）：比Sentence-BERT更有效的句向量方案*
(https://kexue.fm/archives/8847, 2022). Given pairs ``(a_i, b_i)`` with gold similarity scores
``s_i`` (0/1 labels or graded scores), every pair with a higher score should get a higher cosine
than every pair with a lower score:

.. math::

    L = \log\Bigl(1 + \sum_{(i, j):\ s_i > s_j} \exp\bigl(\lambda (\cos_j - \cos_i)\bigr)\Bigr),
    \qquad \cos_i = \cos(a_i, b_i)

with scale ``lambda = 20`` by default. Only the *order* of the scores matters, so the loss trains
the cosine the model is evaluated with (Spearman correlation) instead of a fixed target value.
Pairs with equal scores are not compared; a batch whose scores are all equal gives ``log 1 = 0``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from luse.errors import InputError
from luse.losses.distributed import gather_with_grad
from luse.losses.luse import require_positive

DEFAULT_SCALE = 20.0


def cosent_loss(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, scale: float = DEFAULT_SCALE,
                gather: bool = True) -> torch.Tensor:
    """CoSENT loss over the pairs ``(a[i], b[i])`` ranked by ``scores``.

    Args:
        a: embeddings of the first sentences, ``[B, H]``.
        b: embeddings of the second sentences, ``[B, H]``.
        scores: gold similarity of each pair, ``[B]``; any dtype that compares (labels or floats).
        scale: multiplies the cosine differences (``lambda``; 20, as in the article).
        gather: rank the pairs of every process together (:func:`luse.losses.distributed.gather_with_grad`);
            a no-op without a process group.

    Returns:
        A scalar. CoSENT is a single log-sum-exp over all pairs of the batch, not a mean over
        anchors, so with ``gather`` every process gathers the cosines and scores and returns the
        same *global* loss; DDP's gradient averaging then yields exactly the single-process gradient.

    Raises:
        InputError: ``a`` and ``b`` are not matching ``[B, H]`` tensors with ``B >= 1``, ``scores`` is
            not ``[B]``, or ``scale <= 0``.
    """
    if a.dim() != 2 or a.shape[0] < 1:
        raise InputError("cosent_loss: a", "a tensor of shape [batch >= 1, hidden]", got=tuple(a.shape))
    if b.shape != a.shape:
        raise InputError("cosent_loss: b", f"the shape of a, {tuple(a.shape)}", got=tuple(b.shape))
    if scores.shape != a.shape[:1]:
        raise InputError("cosent_loss: scores", f"a tensor of shape [{a.shape[0]}] (one score per pair)",
                         got=tuple(scores.shape))
    require_positive("cosent_loss: scale", scale)

    cosines = (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(dim=-1)
    if gather:
        cosines, _ = gather_with_grad(cosines)
        scores, _ = gather_with_grad(scores)
    # margins[i, j] = scale * (cos_j - cos_i), kept only where pair i should rank above pair j.
    margins = scale * (cosines[None, :] - cosines[:, None])
    margins = margins.masked_fill(~(scores[:, None] > scores[None, :]), float("-inf"))
    # The leading 0 is the "1 +" inside the log: log(e^0 + sum e^m).
    return torch.cat([margins.new_zeros(1), margins.flatten()]).logsumexp(dim=0)


class CoSENTLoss(nn.Module):
    """:func:`cosent_loss` as a module; ``forward(a, b, scores) -> scalar``.

    Args:
        scale: multiplies the cosine differences.
        gather: rank the pairs of every process together.
    """

    def __init__(self, scale: float = DEFAULT_SCALE, gather: bool = True):
        super().__init__()
        require_positive("CoSENTLoss: scale", scale)
        self.scale = scale
        self.gather = gather

    def forward(self, a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return cosent_loss(a, b, scores, scale=self.scale, gather=self.gather)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, gather={self.gather}"
