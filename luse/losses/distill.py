r"""Similarity distillation: the student learns the teacher's cosine-similarity matrix.

From Su Jianlin (苏剑林), *SimBERTv2来了！融合检索和生成的RoFormer-Sim模型*
(https://kexue.fm/archives/8454, 2021), where it moves SimBERT's retrieval quality into
RoFormer-Sim, and a base RoFormer-Sim into a small one. For one batch of ``n`` sentences with
teacher vectors ``u_1 .. u_n`` and student vectors ``v_1 .. v_n``:

.. math::

    L_{sim} = \frac{\lambda}{n^2} \sum_{i=1}^{n} \sum_{j=1}^{n}
              \bigl(\cos(u_i, u_j) - \cos(v_i, v_j)\bigr)^2, \qquad \lambda = 100

The student copies *relations* between sentences, not the vectors themselves, so teacher and
student may have different widths (a 768-d teacher can teach a 384-d student) and the student
stays free in rotation and scale. The diagonal terms are ``(1 - 1)^2 = 0`` and the matrix is
symmetric, so only the ``n (n - 1) / 2`` distinct off-diagonal pairs carry signal; the
normalisation by ``n^2`` (not by the pair count) follows the article, which sets ``lambda = 100``
for it. The loss is 0 exactly when the two cosine matrices agree, and at most ``4 lambda``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from luse.errors import InputError
from luse.losses.distributed import gather_with_grad
from luse.losses.luse import require_positive

DEFAULT_WEIGHT = 100.0


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """``[n, H] -> [n, n]`` cosine similarities of every pair of rows."""
    unit = F.normalize(vectors, dim=-1)
    return unit @ unit.T


def similarity_distill_loss(student: torch.Tensor, teacher: torch.Tensor, weight: float = DEFAULT_WEIGHT,
                            gather: bool = True) -> torch.Tensor:
    """``weight / n^2 * sum_ij (cos(u_i, u_j) - cos(v_i, v_j))^2``: match the teacher's cosine matrix.

    Args:
        student: the student's sentence vectors ``v``, ``[n, H_student]``; gradients flow here.
        teacher: the teacher's vectors ``u`` for the same ``n`` sentences in the same order,
            ``[n, H_teacher]`` (any width); treated as a constant (detached).
        weight: ``lambda`` (100, as in the article).
        gather: compare the sentences of every process together
            (:func:`luse.losses.distributed.gather_with_grad`); a no-op without a process group. The loss
            is one mean over all ``n^2`` pairs, so, as for CoSENT, every process then returns the
            same *global* loss and DDP's gradient averaging gives the single-process gradient.

    Returns:
        A scalar.

    Raises:
        InputError: ``student`` or ``teacher`` is not ``[n, H]`` with ``n >= 1``, their row counts
            differ, or ``weight <= 0``.

    Example::

        >>> u, v = torch.randn(8, 768), torch.randn(8, 384, requires_grad=True)
        >>> similarity_distill_loss(v, u).backward()
    """
    if student.dim() != 2 or student.shape[0] < 1:
        raise InputError("similarity_distill_loss: student", "a tensor of shape [batch >= 1, hidden]",
                         got=tuple(student.shape))
    if teacher.dim() != 2 or teacher.shape[0] != student.shape[0]:
        raise InputError("similarity_distill_loss: teacher",
                         f"a tensor of shape [{student.shape[0]}, hidden] (one row per student row)",
                         got=tuple(teacher.shape))
    require_positive("similarity_distill_loss: weight", weight)
    teacher = teacher.detach().to(student.dtype)
    if gather:
        student, _ = gather_with_grad(student)
        teacher, _ = gather_with_grad(teacher)
    difference = cosine_matrix(teacher) - cosine_matrix(student)
    return weight * difference.pow(2).mean()


class SimilarityDistillLoss(nn.Module):
    """:func:`similarity_distill_loss` as a module; ``forward(student, teacher) -> scalar``.

    Args:
        weight: ``lambda``, multiplies the mean squared difference of the cosine matrices.
        gather: compare the sentences of every process together.
    """

    def __init__(self, weight: float = DEFAULT_WEIGHT, gather: bool = True):
        super().__init__()
        require_positive("SimilarityDistillLoss: weight", weight)
        self.weight, self.gather = weight, gather

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return similarity_distill_loss(student, teacher, self.weight, gather=self.gather)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, gather={self.gather}"
