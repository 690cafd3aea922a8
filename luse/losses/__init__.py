"""Contrastive and ranking losses for sentence encoders.

Every loss is a plain function of **embeddings** (not of the model), so it can be checked on random
tensors, plus a thin ``nn.Module`` holding its hyper-parameters. With ``gather=True`` (the default)
the losses use the embeddings of every process as candidates; see :mod:`luse.losses.distributed`.

* ``luse`` (:class:`LuseLoss`): ``views [B, V >= 2, H]``; ``temperature``.
* ``simcse_unsup`` (:class:`SimCSEUnsupLoss`): ``views [B, 2, H]``; ``temperature``.
* ``simcse_sup`` (:class:`SimCSESupLoss`): ``anchor, positive[, negative]``, each ``[B, H]``;
  ``temperature``, ``hard_negative_weight``.
* ``cosent`` (:class:`CoSENTLoss`): ``a, b [B, H]`` and ``scores [B]``; ``scale``.
* ``distill`` (:class:`SimilarityDistillLoss`): ``student [n, H_s]``, ``teacher [n, H_t]``; ``weight``.
"""

from luse.losses.cosent import CoSENTLoss, cosent_loss
from luse.losses.distill import SimilarityDistillLoss, similarity_distill_loss
from luse.losses.luse import LuseLoss, luse_loss
from luse.losses.simcse import SimCSESupLoss, SimCSEUnsupLoss, simcse_sup_loss, simcse_unsup_loss

__all__ = [
    "CoSENTLoss",
    "LuseLoss",
    "SimCSESupLoss",
    "SimCSEUnsupLoss",
    "SimilarityDistillLoss",
    "cosent_loss",
    "luse_loss",
    "simcse_sup_loss",
    "simcse_unsup_loss",
    "similarity_distill_loss",
]
