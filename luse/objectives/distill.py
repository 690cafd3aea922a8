"""Similarity distillation (RoFormer-Sim, ../shared/seeds/000): a student encoder learns the teacher's
cosine-similarity matrix over batches of unlabelled sentences, plus, when the student is a generator
(a :class:`luse.model.seq2seq.Seq2SeqModel` with an LM head), RoFormer-Sim's generation loss on pairs
of similar sentences.

The losses are :func:`luse.losses.similarity_distill_loss` and, for a generator student, the LM
term of :class:`luse.objectives.roformer_sim.RoFormerSimObjective` (weighted by ``distill.lm_weight``).
Teacher and student are built in :mod:`luse.model.student`.
"""

from __future__ import annotations

import random

import torch

from luse.config import TrainConfig
from luse.errors import InputError
from luse.losses import similarity_distill_loss
from luse.model.encoder import SentenceEncoder
from luse.objectives.base import MODEL_INPUTS, tokenize_unique
from luse.objectives.roformer_sim import RoFormerSimObjective


def same_tokenizer(a, b) -> bool:
    """True when two tokenizers give the same ids (same object, or same class and vocabulary)."""
    if a is b:
        return True
    return type(a) is type(b) and a.get_vocab() == b.get_vocab() and \
        getattr(a, "do_lower_case", None) == getattr(b, "do_lower_case", None)


class DistillObjective:
    """Batches of unlabelled sentences; loss = ``similarity_distill_loss(student, teacher)``.

    The teacher is frozen and in eval mode (no dropout: its similarities are the target); it moves to
    the training device in :meth:`setup`. When teacher and student tokenize alike, the teacher reads
    the student's tokens; otherwise each batch also carries the teacher's own tokens (built in the
    DataLoader worker, like the student's) and the texts themselves (``batch["texts"]``).

    Items may also be pairs of similar sentences ``(a, b)``: both sides are rows of the similarity
    matrix (``2B`` sentences for ``B`` pairs, in the order ``a_1, b_1, a_2, b_2 ...``). With ``lm``
    (a :class:`luse.model.seq2seq.RoFormerSimObjective`, normally ``contrastive_weight=0``) the student is a
    Seq2SeqModel and the pairs also train its generator: each batch carries the objective's UniLM
    block (``batch["seq2seq"]``: both orders, BART noise on the source) and the loss becomes
    ``distill + lm_weight * lm.model_loss(...)``. The two terms take two forwards: the sentence
    vectors come from a plain forward over the clean sentences (what the teacher sees and what the
    exported encoder computes), the LM term from the UniLM forward.
    """

    def __init__(self, teacher: SentenceEncoder, tokenizer, max_length: int, weight: float = 100.0,
                 gather: bool = True, lm=None, lm_weight: float = 1.0):
        self.teacher, self.tokenizer, self.max_length = teacher, tokenizer, max_length
        self.weight, self.gather = weight, gather
        self.lm, self.lm_weight = lm, lm_weight
        self.shared_tokens = same_tokenizer(tokenizer, teacher.tokenizer) and teacher.max_length == max_length
        self.teacher.eval().requires_grad_(False)

    def collate(self, items: list, rng: random.Random) -> dict:
        pairs = [tuple(item[:2]) for item in items if not isinstance(item, str)]
        sentences = [text for pair in pairs for text in pair] if pairs else list(items)
        # No dedup across rows here: each sentence is one row of the n x n similarity matrix.
        batch = dict(self.tokenizer(sentences, padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt"))
        batch["texts"] = sentences
        if not self.shared_tokens:
            batch["teacher_inputs"] = tokenize_unique(self.teacher.tokenizer, sentences, self.teacher.max_length)
        if self.lm is not None:
            if len(pairs) != len(items):
                raise InputError("distill", "pairs of similar sentences (distill.pairs) for the generation loss",
                                 got="single sentences")
            batch["seq2seq"] = self.lm.collate(pairs, rng)
        return batch

    def setup(self, accelerator, model) -> None:
        self.teacher.to(accelerator.device).eval()

    def teacher_vectors(self, inputs: dict, batch: dict) -> torch.Tensor:
        """The teacher's sentence vectors for this batch, without a graph."""
        if not self.shared_tokens:
            device = next(self.teacher.parameters()).device
            inputs = {k: v.to(device) for k, v in batch["teacher_inputs"].items() if k in MODEL_INPUTS}
        with torch.no_grad():
            return self.teacher(**inputs).float()

    def model_loss(self, model, inputs: dict, batch: dict) -> torch.Tensor:
        student = model(**inputs)
        loss = similarity_distill_loss(student.float(), self.teacher_vectors(inputs, batch), weight=self.weight,
                                       gather=self.gather)
        if self.lm is not None and self.lm_weight:
            device = inputs["input_ids"].device
            pairs = {k: v.to(device) for k, v in batch["seq2seq"].items()}
            loss = loss + self.lm_weight * self.lm.model_loss(model, pairs, batch)
        return loss


def distill_objective(config: TrainConfig, teacher: SentenceEncoder, tokenizer) -> DistillObjective:
    """The objective of ``distill.*``: the similarity loss weighted ``distill.weight`` and, with
    ``distill.lm_weight > 0``, the generation term on the pairs (BART noise ``seq2seq.mask_rate``)."""
    settings = config.distill
    lm = None
    if settings.lm_weight > 0:  # only the generation term: the teacher gives the sentence-vector signal
        lm = RoFormerSimObjective(tokenizer, config.model.max_length, mask_rate=config.seq2seq.mask_rate,
                                  contrastive_weight=0.0, gather=False)
    return DistillObjective(teacher, tokenizer, config.model.max_length, weight=settings.weight,
                            gather=config.loss.gather, lm=lm, lm_weight=settings.lm_weight)
