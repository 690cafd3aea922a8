"""Distillation's models (RoFormer-Sim, ../shared/seeds/000): a frozen teacher, and a student started from it.

``load_teacher(path)``                 any exported luse model, RoFormer-Sim export or Hugging Face
                                       encoder, frozen, eval mode
``student_from_teacher(teacher, ...)`` a smaller student initialised from the teacher's lower layers
                                       (``layers=N``) or a fresh config with the teacher tensors that
                                       fit; ``lm_head=True`` makes it a Seq2SeqModel (head copied too)
``export_student(model, out_dir)``     a generator student as a ``*ForMaskedLM``, any other as an encoder

The objective is :class:`luse.objectives.distill.DistillObjective`; ``recipes/distill.py`` wires them.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

from luse.config import TrainConfig
from luse.errors import InputError
from luse.io import resolve_model
from luse.model.encoder import SentenceEncoder

logger = logging.getLogger("luse")


def is_seq2seq_export(path: str | os.PathLike) -> bool:
    """True for a directory written by :func:`luse.model.seq2seq.export_seq2seq` (``luse.json`` names
    its generation class): a checkpoint with an LM head whose sentence vector is the [CLS] state."""
    from luse.model.export import read_export_info

    return Path(path).is_dir() and "generation" in (read_export_info(path) or {})


def load_teacher(name_or_path: str, *, pooling: str | None = None, max_length: int | None = None) -> SentenceEncoder:
    """A frozen teacher in eval mode: an exported luse model (its saved pooling), a RoFormer-Sim
    export (a :class:`~luse.model.seq2seq.Seq2SeqModel`: CLS vector, LM head kept so that a generator
    student can copy it), any Hugging Face encoder directory (``pooler`` pooling unless given) or
    ``m3e-small``.

    Raises:
        InputError: nothing loadable at ``name_or_path``.
    """
    from luse.model.export import load_encoder
    from luse.model.seq2seq import check_pooling, load_seq2seq

    try:
        path = resolve_model(name_or_path)
    except InputError as err:  # say which key holds the path (resolve_model names only the path)
        raise InputError(f"distill.teacher={name_or_path}", err.expected, got=err.got, hint=err.hint) from None
    try:
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
        lm_head: build a :class:`~luse.model.seq2seq.Seq2SeqModel` (``*ForMaskedLM`` with its LM head tied
            to the input embeddings): a seq2seq teacher's head is copied with the layers, a plain
            teacher's student starts a new head (logged).

    Returns:
        A :class:`SentenceEncoder` (or Seq2SeqModel) in train mode; ``copied`` / ``fresh`` attributes
        on it list the parameter names taken from the teacher and those initialised at random.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    from luse.model.seq2seq import Seq2SeqModel

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


def export_student(model, out_dir: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """The recipe's export: a generator student with :func:`luse.model.seq2seq.export_seq2seq` (it stays a
    ``*ForMaskedLM``), any other with :func:`luse.model.export.export_encoder`."""
    from luse.model.export import export_encoder
    from luse.model.seq2seq import Seq2SeqModel, export_seq2seq

    export = export_seq2seq if isinstance(model, Seq2SeqModel) else export_encoder
    return export(model, out_dir, metadata=metadata)


def distill_student(config: TrainConfig, teacher: SentenceEncoder) -> SentenceEncoder:
    """The student ``distill.*`` asks for: the teacher's lower layers (``distill.student_layers``), a
    fresh ``distill.student_config``, or else ``model.name_or_path`` (any encoder, e.g. a smaller
    pretrained one). ``distill.lm_weight > 0`` makes it a generator (a Seq2SeqModel)."""
    from luse.model.encoder import encoder_from_config
    from luse.model.seq2seq import Seq2SeqModel, seq2seq_from_config

    settings = config.distill
    generator = settings.lm_weight > 0
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
    return seq2seq_from_config(config.model) if generator else encoder_from_config(config.model)
