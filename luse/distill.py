"""Similarity distillation (RoFormer-Sim, ../shared/seeds/000): a student encoder learns the
teacher's cosine-similarity matrix over batches of unlabelled sentences.

Pieces, each usable on its own:

``load_teacher(path)``                 any exported luse model or Hugging Face encoder, frozen, eval mode
``student_from_teacher(teacher, ...)`` a smaller student initialised from the teacher's lower layers
                                       (``layers=N``) or a fresh config with the teacher tensors that fit
``DistillObjective``                   the trainer objective: teacher vectors under ``no_grad`` from the
                                       same tokens when the tokenizers agree, else from its own tokens
``recipe_parts()``                     ``build_model`` / ``build_task`` for :func:`luse.runner.run_recipe`

The loss is :func:`luse.losses.similarity_distill_loss`. The article adds RoFormer-Sim's
generation loss when the student has an LM head; that model lives in the RoFormer-Sim recipe, and
this objective trains sentence encoders (``SentenceEncoder``) only.
"""

from __future__ import annotations

import copy
import logging
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


def load_teacher(name_or_path: str, *, pooling: str | None = None, max_length: int | None = None) -> SentenceEncoder:
    """A frozen teacher in eval mode: an exported luse model (its saved pooling), any Hugging Face
    encoder directory (``pooler`` pooling unless given) or ``m3e-small``.

    Raises:
        InputError: nothing loadable at ``name_or_path``.
    """
    from luse.export import load_encoder
    from luse.resources import resolve_model

    try:
        teacher = load_encoder(resolve_model(name_or_path), pooling=pooling, max_length=max_length)
    except OSError as err:
        reason = " ".join(str(err).split())[:120]
        raise InputError("distill.teacher", "an exported luse model, a Hugging Face encoder directory or m3e-small",
                         got=f"{name_or_path} ({reason})") from None
    teacher.eval().requires_grad_(False)
    return teacher


def student_from_teacher(teacher: SentenceEncoder, layers: int = 0, config_path: str | None = None,
                         pooling: str | None = None, max_length: int | None = None) -> SentenceEncoder:
    """A student that shares the teacher's tokenizer and starts from the teacher's weights.

    Args:
        teacher: the teacher encoder (left untouched).
        layers: ``N > 0`` builds the teacher's config with ``num_hidden_layers=N`` and copies the
            embeddings, the first ``N`` transformer layers and the pooler.
        config_path: instead of ``layers``, a ``config.json`` (or a directory holding one) for the
            student, e.g. fewer layers or a narrower hidden size; every teacher tensor whose name and
            shape fit the student is copied, the rest starts fresh (a narrower student copies nothing
            and learns from the teacher alone).
        pooling, max_length: the student's settings (default: the teacher's).

    Returns:
        A :class:`SentenceEncoder` in train mode; ``copied`` / ``fresh`` attributes on it list the
        parameter names taken from the teacher and those initialised at random.
    """
    from transformers import AutoConfig, AutoModel

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
    student = AutoModel.from_config(config)
    # Layer i of the student has the same parameter names as layer i of the teacher, so copying every
    # name present in both with the same shape takes exactly the lower layers (and nothing deeper).
    teacher_state = source.state_dict()
    student_state = student.state_dict()
    fitting = {name: tensor for name, tensor in teacher_state.items()
               if name in student_state and student_state[name].shape == tensor.shape}
    student.load_state_dict(fitting, strict=False)
    encoder = SentenceEncoder(student, teacher.tokenizer, pooling=pooling or teacher.pooling,
                              max_length=max_length or teacher.max_length)
    encoder.copied = sorted(fitting)
    encoder.fresh = sorted(set(student_state) - set(fitting))
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
    """

    kind = "distill"

    def __init__(self, teacher: SentenceEncoder, tokenizer, max_length: int, weight: float = 100.0,
                 gather: bool = True):
        self.teacher, self.tokenizer, self.max_length = teacher, tokenizer, max_length
        self.weight, self.gather = weight, gather
        self.shared_tokens = same_tokenizer(tokenizer, teacher.tokenizer) and teacher.max_length == max_length
        self.teacher.eval().requires_grad_(False)

    def collate(self, sentences: list[str], rng: random.Random) -> dict:
        # No dedup across rows here: each sentence is one row of the n x n similarity matrix.
        batch = dict(self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.max_length,
                                    return_tensors="pt"))
        batch["texts"] = list(sentences)
        if not self.shared_tokens:
            batch["teacher_inputs"] = tokenize_unique(self.teacher.tokenizer, sentences, self.teacher.max_length)
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
        return similarity_distill_loss(student.float(), self.teacher_vectors(inputs, batch), weight=self.weight,
                                       gather=self.gather)


def recipe_parts() -> tuple[Callable[[TrainConfig], SentenceEncoder], Callable]:
    """``(build_model, build_task)`` for :func:`luse.runner.run_recipe`, sharing one teacher.

    ``build_model`` loads ``distill.teacher`` and returns the student: the teacher's lower layers
    (``distill.student_layers``), a fresh ``distill.student_config``, or else ``model.name_or_path``
    (any encoder, e.g. a smaller pretrained one). ``build_task`` returns the objective and the
    sentences of ``data.corpus`` (read as in pretrain_luse).
    """
    from luse.runner import corpus_items, load_encoder_for

    shared: dict[str, SentenceEncoder] = {}

    def build_model(config: TrainConfig) -> SentenceEncoder:
        settings = config.distill
        teacher = shared["teacher"] = load_teacher(settings.teacher, max_length=config.model.max_length)
        if settings.student_layers < 0:
            raise InputError("config", "distill.student_layers >= 0", got=settings.student_layers)
        if settings.student_layers > 0 or settings.student_config:
            return student_from_teacher(teacher, settings.student_layers, settings.student_config,
                                        pooling=config.model.pooling, max_length=config.model.max_length)
        return load_encoder_for(config)

    def build_task(config: TrainConfig, tokenizer) -> tuple[DistillObjective, Callable[[int], Iterator[str]]]:
        objective = DistillObjective(shared["teacher"], tokenizer, config.model.max_length,
                                     weight=config.distill.weight, gather=config.loss.gather)
        return objective, corpus_items(config)

    return build_model, build_task
