"""Similarity distillation (RoFormer-Sim, ../shared/seeds/000): a student encoder learns the
teacher's cosine-similarity matrix over batches of unlabelled sentences, plus, when the student
is a generator (a :class:`luse.seq2seq.Seq2SeqModel` with an LM head), RoFormer-Sim's generation
loss on pairs of similar sentences.

Pieces, each usable on its own:

``load_teacher(path)``                 any exported luse model, RoFormer-Sim export or Hugging Face
                                       encoder, frozen, eval mode
``student_from_teacher(teacher, ...)`` a smaller student initialised from the teacher's lower layers
                                       (``layers=N``) or a fresh config with the teacher tensors that
                                       fit; ``lm_head=True`` makes it a Seq2SeqModel (head copied too)
``DistillObjective``                   the trainer objective: teacher vectors under ``no_grad`` from the
                                       same tokens when the tokenizers agree, else from its own tokens;
                                       with ``lm=`` also the generation loss
``recipe_parts()``, ``export_student`` ``build_model`` / ``build_task`` / ``export`` for
                                       :func:`luse.runner.run_recipe`

The losses are :func:`luse.losses.similarity_distill_loss` and, for a generator student, the LM
term of :class:`luse.seq2seq.RoFormerSimObjective` (weighted by ``distill.lm_weight``).
"""

from __future__ import annotations

import copy
import logging
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from luse.config import TrainConfig
from luse.encoder import SentenceEncoder
from luse.errors import InputError
from luse.losses import similarity_distill_loss
from luse.objectives import MODEL_INPUTS, tokenize_unique

logger = logging.getLogger("luse")


def is_seq2seq_export(path: str | os.PathLike) -> bool:
    """True for a directory written by :func:`luse.seq2seq.export_seq2seq` (``luse.json`` names
    its generation class): a checkpoint with an LM head whose sentence vector is the [CLS] state."""
    from luse.export import read_export_info

    return Path(path).is_dir() and "generation" in (read_export_info(path) or {})


def load_teacher(name_or_path: str, *, pooling: str | None = None, max_length: int | None = None) -> SentenceEncoder:
    """A frozen teacher in eval mode: an exported luse model (its saved pooling), a RoFormer-Sim
    export (a :class:`~luse.seq2seq.Seq2SeqModel`: CLS vector, LM head kept so that a generator
    student can copy it), any Hugging Face encoder directory (``pooler`` pooling unless given) or
    ``m3e-small``.

    Raises:
        InputError: nothing loadable at ``name_or_path``.
    """
    from luse.export import load_encoder
    from luse.resources import resolve_model
    from luse.seq2seq import check_pooling, load_seq2seq

    try:
        path = resolve_model(name_or_path)
        if is_seq2seq_export(path):
            if pooling:
                check_pooling(pooling)
            teacher = load_seq2seq(path, max_length=max_length)
        else:
            teacher = load_encoder(path, pooling=pooling, max_length=max_length)
    except OSError as err:
        reason = " ".join(str(err).split())[:120]
        raise InputError("distill.teacher", "an exported luse model, a Hugging Face encoder directory or m3e-small",
                         got=f"{name_or_path} ({reason})") from None
    teacher.eval().requires_grad_(False)
    return teacher


def student_from_teacher(teacher: SentenceEncoder, layers: int = 0, config_path: str | None = None,
                         pooling: str | None = None, max_length: int | None = None,
                         lm_head: bool = False) -> SentenceEncoder:
    """A student that shares the teacher's tokenizer and starts from the teacher's weights.

    Args:
        teacher: the teacher encoder (left untouched).
        layers: ``N > 0`` builds the teacher's config with ``num_hidden_layers=N`` and copies the
            embeddings, the first ``N`` transformer layers and the pooler.
        config_path: instead of ``layers``, a ``config.json`` (or a directory holding one) for the
            student, e.g. fewer layers or a narrower hidden size; every teacher tensor whose name and
            shape fit the student is copied, the rest starts fresh (a narrower student copies nothing
            and learns from the teacher alone).
        pooling, max_length: the student's settings (default: the teacher's; a generator student
            always pools [CLS]).
        lm_head: build a :class:`~luse.seq2seq.Seq2SeqModel` (``*ForMaskedLM`` with its LM head tied
            to the input embeddings): a seq2seq teacher's head is copied with the layers, a plain
            teacher's student starts a new head (logged).

    Returns:
        A :class:`SentenceEncoder` (or Seq2SeqModel) in train mode; ``copied`` / ``fresh`` attributes
        on it list the parameter names taken from the teacher and those initialised at random.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    from luse.seq2seq import Seq2SeqModel

    if (layers > 0) == (config_path is not None):
        raise InputError("distill", "exactly one of distill.student_layers > 0 or distill.student_config",
                         got=f"student_layers={layers} student_config={config_path}")
    source = teacher.backbone
    if layers > 0:
        available = source.config.num_hidden_layers
        if layers > available:
            raise InputError("distill.student_layers", f"at most the teacher's {available} layers", got=layers)
        config = copy.deepcopy(source.config)
        config.num_hidden_layers = layers
    else:
        path = Path(config_path).expanduser()
        try:
            config = AutoConfig.from_pretrained(str(path.parent if path.is_file() else path))
        except (OSError, ValueError) as err:
            raise InputError("distill.student_config", "a Hugging Face config.json or its directory",
                             got=f"{config_path} ({' '.join(str(err).split())[:100]})") from None
    if lm_head:
        config.is_decoder, config.tie_word_embeddings = False, True  # as Seq2SeqModel.from_pretrained
        student = AutoModelForMaskedLM.from_config(config)
        prefix = student.base_model_prefix
        # Names as in the student: a seq2seq teacher's full *ForMaskedLM (head included), else the backbone's.
        teacher_state = teacher.mlm_model.state_dict() if isinstance(teacher, Seq2SeqModel) else \
            {f"{prefix}.{name}": tensor for name, tensor in source.state_dict().items()}
    else:
        student = AutoModel.from_config(config)
        teacher_state = source.state_dict()
    # Layer i of the student has the same parameter names as layer i of the teacher, so copying every
    # name present in both with the same shape takes exactly the lower layers (and nothing deeper).
    student_state = student.state_dict()
    fitting = {name: tensor for name, tensor in teacher_state.items()
               if name in student_state and student_state[name].shape == tensor.shape}
    student.load_state_dict(fitting, strict=False)
    copied_storage = {student_state[name].data_ptr() for name in fitting}
    # a tied tensor (the LM decoder = the word embeddings) counts as copied under both names
    fresh = sorted(name for name in student_state
                   if name not in fitting and student_state[name].data_ptr() not in copied_storage)
    if lm_head:
        encoder = Seq2SeqModel(student, teacher.tokenizer, max_length=max_length or teacher.max_length)
        head = [name for name in fresh if not name.startswith(prefix + ".")]
        encoder.new_lm_head = bool(head)
        if head:
            logger.warning("the teacher has no LM head: the student starts a new one (tied to the input "
                           "embeddings; initialised: %s)", ", ".join(head))
    else:
        encoder = SentenceEncoder(student, teacher.tokenizer, pooling=pooling or teacher.pooling,
                                  max_length=max_length or teacher.max_length)
    encoder.copied, encoder.fresh = sorted(fitting), fresh
    logger.info("student: %d layers, hidden %d; %d tensors copied from the teacher, %d fresh",
                config.num_hidden_layers, config.hidden_size, len(encoder.copied), len(encoder.fresh))
    return encoder.train()


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
    (a :class:`luse.seq2seq.RoFormerSimObjective`, normally ``contrastive_weight=0``) the student is a
    Seq2SeqModel and the pairs also train its generator: each batch carries the objective's UniLM
    block (``batch["seq2seq"]``: both orders, BART noise on the source) and the loss becomes
    ``distill + lm_weight * lm.model_loss(...)``. The two terms take two forwards: the sentence
    vectors come from a plain forward over the clean sentences (what the teacher sees and what the
    exported encoder computes), the LM term from the UniLM forward.
    """

    kind = "distill"

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


def export_student(model, out_dir: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """The recipe's export: a generator student with :func:`luse.seq2seq.export_seq2seq` (it stays a
    ``*ForMaskedLM``), any other with :func:`luse.export.export_encoder`."""
    from luse.export import export_encoder
    from luse.seq2seq import Seq2SeqModel, export_seq2seq

    export = export_seq2seq if isinstance(model, Seq2SeqModel) else export_encoder
    return export(model, out_dir, metadata=metadata)


def recipe_parts() -> tuple[Callable[[TrainConfig], SentenceEncoder], Callable]:
    """``(build_model, build_task)`` for :func:`luse.runner.run_recipe`, sharing one teacher.

    ``build_model`` loads ``distill.teacher`` and returns the student: the teacher's lower layers
    (``distill.student_layers``), a fresh ``distill.student_config``, or else ``model.name_or_path``
    (any encoder, e.g. a smaller pretrained one). ``build_task`` returns the objective and the
    sentences of ``data.corpus`` (read as in pretrain_luse), or the pairs of ``distill.pairs``.

    ``distill.lm_weight > 0`` (with ``distill.pairs`` and ``model.pooling=cls``) makes the student a
    generator, a :class:`~luse.seq2seq.Seq2SeqModel` whose loss adds ``lm_weight`` x the RoFormer-Sim
    generation loss on the pairs (BART noise ``seq2seq.mask_rate``); export it with
    :func:`export_student`.
    """
    from luse.resources import resolve_model
    from luse.runner import corpus_items, in_memory_items, load_encoder_for
    from luse.seq2seq import (
        RoFormerSimObjective,
        Seq2SeqModel,
        build_roformer_sim_model,
        check_pooling,
        read_similar_pairs,
    )

    shared: dict[str, SentenceEncoder] = {}

    def build_model(config: TrainConfig) -> SentenceEncoder:
        settings = config.distill
        if settings.student_layers < 0:
            raise InputError("config", "distill.student_layers >= 0", got=settings.student_layers)
        if settings.lm_weight < 0 or settings.lm_weight > 0 and not settings.pairs:
            raise InputError("config", "distill.lm_weight >= 0, and distill.pairs=FILE (similar sentences) "
                             "when distill.lm_weight > 0", got=f"lm_weight={settings.lm_weight} pairs={settings.pairs}")
        generator = settings.lm_weight > 0
        if generator:
            check_pooling(config.model.pooling)
        teacher = shared["teacher"] = load_teacher(settings.teacher, max_length=config.model.max_length)
        from_teacher = settings.student_layers > 0 or settings.student_config
        source_has_head = isinstance(teacher, Seq2SeqModel) if from_teacher else \
            is_seq2seq_export(resolve_model(config.model.name_or_path))
        if source_has_head and not generator:
            logger.warning("the student's source has an LM head; with distill.lm_weight=0 the student is a plain "
                           "encoder without it (distill.lm_weight>0 and distill.pairs=FILE keep it a generator)")
        if from_teacher:
            return student_from_teacher(teacher, settings.student_layers, settings.student_config,
                                        pooling=config.model.pooling, max_length=config.model.max_length,
                                        lm_head=generator)
        return build_roformer_sim_model(config) if generator else load_encoder_for(config)

    def build_task(config: TrainConfig, tokenizer) -> tuple[DistillObjective, Callable[[int], Iterator]]:
        settings = config.distill
        lm = None
        if settings.lm_weight > 0:  # only the generation term: the teacher gives the sentence-vector signal
            lm = RoFormerSimObjective(tokenizer, config.model.max_length, mask_rate=config.seq2seq.mask_rate,
                                      contrastive_weight=0.0, gather=False)
        objective = DistillObjective(shared["teacher"], tokenizer, config.model.max_length, weight=settings.weight,
                                     gather=config.loss.gather, lm=lm, lm_weight=settings.lm_weight)
        if not settings.pairs:
            return objective, corpus_items(config)
        rows = list(read_similar_pairs(settings.pairs))
        if not rows:
            raise InputError(settings.pairs, "at least one pair of similar sentences")
        return objective, in_memory_items(rows, config.seed)

    return build_model, build_task
