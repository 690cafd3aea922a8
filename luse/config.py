"""Typed run configuration: a YAML file plus ``key=value`` overrides, checked loudly.

Every recipe reads the same schema, so ``output_dir=... max_steps=... model.name_or_path=...
data.corpus=... eval.sts=[a.tsv,b.tsv]`` mean the same thing everywhere. An unknown key or a
value of the wrong type is an error that names the key and the expected type (with a guess
at what was meant), never a silent default.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from luse.errors import InputError


@dataclass
class ModelConfig:
    name_or_path: str = "m3e-small"  # built-in offline alias, any local dir, or a hub name
    pooling: str = "pooler"  # pooler | cls | mean | first_last_avg
    mlp: bool = False  # SimCSE's train-only MLP over the pooled vector
    max_length: int = 64
    attn_implementation: str = "sdpa"
    # Exact savings (luse/fastpath.py): rows per length-sorted chunk (0: one padded block), a BERT
    # last layer that computes [CLS] alone under cls/pooler pooling, and BERT's per-token layers on
    # real tokens only (no padding).
    chunk_rows: int = 64
    cls_only: bool = True
    unpad: bool = True
    # Dropout masks drawn 64 bits at a time on CPUs (luse/model/dropout.py): same distribution, cheaper
    # (benchmarks/results/throughput.md, --explore).
    fast_dropout: bool = True
    # The rate of every dropout in the backbone while training: the noise that makes a dropout view differ
    # from its sentence. None: the base's own (its config's). The export's config keeps the base's values.
    dropout: float | None = None
    # With pooling=mean: export one more, fixed layer whose [CLS] output is the mean (luse/model/mean_layer.py),
    # so the served vector is still plain BertModel(...)[0][:, 0].
    export_as_cls: bool = False


@dataclass
class DataConfig:
    corpus: list[str] = field(default_factory=lambda: ["peoples-daily"])  # files, dirs, globs, hf:NAME
    field: str = "text"  # jsonl field
    column: str | None = None  # csv/tsv column name or index
    split_sentences: bool = True  # split documents into sentences
    min_chars: int = 5
    max_chars: int = 128
    dedup: bool = True
    shuffle_buffer: int = 10000
    num_workers: int = 0  # DataLoader workers that build (augment + tokenise) batches
    length_groups: int = 0  # > 1: sort this many global batches at a time by length (luse.data.length_groups)


@dataclass
class ViewsConfig:
    """Positives per sentence for view-based objectives: the sentence itself, plus these views."""

    dropout: int = 1  # extra encodings of the same text: dropout makes them differ
    eda: int = 0  # text views from EDA (synonym replacement, insertion, swap, deletion)
    synonym_cache: str | None = None  # None: the default cache path (built on first use)
    language: str = "zh"  # zh: jieba words; ws: whitespace-separated languages
    alpha_sr: float = 0.1
    alpha_ri: float = 0.1
    alpha_rs: float = 0.1
    p_rd: float = 0.1
    paraphrases: str | None = None  # jsonl {"text", "views"} of pre-generated paraphrases (luse generate --out)
    generated: int = 0  # paraphrase views per sentence, looked up in views.paraphrases
    repeat: int = 0  # ESimCSE's word-repetition views: a few units doubled, so length is no cue (augment/repetition.py)
    dup_rate: float = 0.32  # repetition views double up to this fraction of a sentence's units


@dataclass
class LossConfig:
    name: str = "luse"  # luse | simcse_unsup | simcse_sup | cosent
    temperature: float = 0.05
    hard_negative_weight: float = 0.0  # simcse_sup
    scale: float = 20.0  # cosent
    gather: bool = True  # negatives from every process (all-gather with gradient)
    queue_size: int = 0  # >0: a FIFO queue of this many momentum-encoder embeddings as extra negatives
    momentum: float = 0.995  # EMA factor of the momentum encoder that fills the queue (luse.objectives.momentum)
    # luse: "share" (LUSE's target, positives split probability 1) or "each" (a softmax per positive
    # over it and the negatives; see luse/losses/luse.py). The same for 2 views.
    positives: str = "share"
    # Stay near the base (luse.objectives.anchor): > 0 adds this weight times the similarity-distillation
    # loss between the student's vectors and those of a frozen copy of the base, read in anchor_pooling
    # ("auto": the pooling the base was trained with, as its files declare; else model.pooling).
    anchor_weight: float = 0.0
    anchor_pooling: str = "auto"
    # > 0: the anchor distils over this many of each step's sentences per process (evenly spaced through the
    # batch), so the frozen base encodes only those; 0: every sentence.
    anchor_sentences: int = 0


@dataclass
class Seq2SeqConfig:
    """RoFormer-Sim (luse.model.seq2seq): UniLM generation + contrastive CLS loss on similar pairs."""

    mask_rate: float = 0.15  # share of source tokens replaced by [MASK] (BART-style noise)
    lm_weight: float = 1.0  # weight of the generation (LM) loss
    contrastive_weight: float = 1.0  # weight of the in-batch contrastive loss on CLS vectors


@dataclass
class EvalConfig:
    sts: list[str] = field(default_factory=list)
    every: int = 50  # steps between evaluations (0: only at the end)
    batch_size: int = 128
    label_free_sentences: int = 500  # alignment/uniformity sample when no STS file is given


@dataclass
class DistillConfig:
    """recipes/distill.py: the student learns the teacher's cosine-similarity matrix (RoFormer-Sim)."""

    teacher: str = "m3e-small"  # an exported luse model, a Hugging Face encoder directory, or m3e-small
    weight: float = 100.0  # lambda of the loss
    student_layers: int = 0  # >0: student = the teacher's embeddings + first N layers + pooler
    student_config: str | None = None  # a config.json (or its dir): fresh student, teacher tensors that fit copied
    pairs: str | None = None  # similar pairs (jsonl/tsv/csv as roformer_sim): the items, both sides distilled
    lm_weight: float = 0.0  # >0: generator student (Seq2SeqModel), + lm_weight x its generation loss on the pairs


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    seed: int = 42
    max_steps: int = 150  # optimizer steps; 0 means: run `epochs` passes over the data
    epochs: int = 1
    batch_size: int = 64  # sentences per process per micro-batch (before views)
    lr: float = 5e-5
    weight_decay: float = 0.0
    scheduler: str = "linear"  # any transformers scheduler name: linear, cosine, constant_with_warmup ...
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    max_grad_norm: float = 1.0  # 0 disables clipping
    mixed_precision: str = "auto"  # auto (bf16 where native: GPUs that support it, CPUs with AVX512-BF16/AMX) | no | fp16 | bf16
    grad_cache_chunk: int = 0  # >0: GradCache with sub-batches of this many texts (memory stays flat)
    threads: int = 0  # CPU threads per process; 0: the usable cores shared among this machine's processes
    log_every: int = 10
    save_every: int = 50  # 0: only on exit
    keep_checkpoints: int = 2
    resume: str | None = None  # latest | a checkpoint directory
    on_nan: str = "stop"  # stop | skip
    report_to: str = "tensorboard"  # tensorboard | none
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seq2seq: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


# The recipe that trains each loss.name: a recipe given another recipe's loss says which one to use.
LOSS_RECIPES = {"luse": "pretrain_luse", "simcse_unsup": "simcse_unsup", "simcse_sup": "simcse_sup",
                "cosent": "cosent", "cross_bce": "cross_encoder", "cross_mse": "cross_encoder",
                "roformer_sim": "roformer_sim"}

CHOICES = {
    "model.pooling": ("pooler", "cls", "mean", "first_last_avg"),
    "loss.anchor_pooling": ("auto", "pooler", "cls", "mean", "first_last_avg"),
    "loss.name": tuple(LOSS_RECIPES),
    "mixed_precision": ("auto", "no", "fp16", "bf16"),
    "on_nan": ("stop", "skip"),
    "report_to": ("tensorboard", "none"),
    "views.language": ("zh", "ws"),
    "loss.positives": ("share", "each"),
}


def load_config(path: str | Path | list | tuple | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults, then the YAML file(s), each layered over the one before, then ``key=value`` overrides
    (values parsed as YAML). A recipe passes its own YAML first and the user's ``--config FILE`` after it."""
    config = TrainConfig()
    paths = [] if path is None else list(path) if isinstance(path, (list, tuple)) else [path]
    for one in paths:
        _apply_yaml(config, one)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError("command line", "key=value", item)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except (yaml.YAMLError, RecursionError):
            value = raw
        set_value(config, key.strip(), value, source="command line")
    try:
        validate(config)
    except InputError as err:
        if not paths or err.where != "config":
            raise
        # Name the file(s) the user has to fix (the value may also come from an override).
        where = " over ".join(str(one) for one in reversed(paths))
        where = f"{where} (with the command-line overrides)" if overrides else where
        raise InputError(where, err.expected, err.got) from None
    return config


def _apply_yaml(config: TrainConfig, path: str | Path) -> None:
    """Set every key of the YAML file at ``path`` on ``config`` (keys it does not name stay as they are)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise InputError(path, "valid YAML", str(getattr(err, "problem", err)),
                         line=mark.line + 1 if mark else None) from None
    except UnicodeDecodeError as err:
        raise InputError(path, "UTF-8 text", f"undecodable bytes at byte {err.start}") from None
    except RecursionError:  # absurdly nested brackets
        raise InputError(path, "a YAML mapping of config keys", "nesting too deep to parse") from None
    except OSError as err:  # a --config FILE that is not there, or a directory
        raise InputError(path, "a readable YAML file", err.strerror or type(err).__name__) from None
    if not isinstance(loaded, dict):
        raise InputError(path, "a YAML mapping of config keys", type(loaded).__name__)
    try:
        items = _flatten(loaded)
    except RecursionError:  # an alias inside its own anchor: `model: &m {x: *m}`
        raise InputError(path, "a YAML mapping of config keys", "a mapping that contains itself") from None
    for key, value in items:
        set_value(config, key, value, source=str(path))


def read_config(default_yaml: str | Path, argv: list[str], *,
                losses: tuple[str, ...] | None = None) -> TrainConfig:
    """A recipe's config from its command line ``[--config FILE] key=value ...`` over ``default_yaml``.

    Layers, each over the one before: the schema's defaults, ``default_yaml`` (the recipe's), the
    ``--config`` file (only the keys it names change), then the ``key=value`` overrides.

    ``losses``: the ``loss.name`` values the recipe trains, checked here once (None: the recipe does
    not read ``loss.name``). Every later step can rely on it.
    """
    path, overrides = split_argv(argv)
    config = load_config([default_yaml, path] if path else [default_yaml], overrides)
    name = config.loss.name
    if losses is not None and name not in losses:
        raise InputError("config", f"loss.name to be one of {', '.join(losses)} in this recipe "
                         f"(loss.name={name} trains with recipes/{LOSS_RECIPES[name]}.py)", got=name)
    return config


def split_argv(argv: list[str]) -> tuple[str | None, list[str]]:
    """``[--config FILE | config=FILE] key=value ...`` -> (config path, overrides)."""
    path, overrides, it = None, [], iter(argv)
    for arg in it:
        if arg in ("--config", "-c"):
            path = next(it, None)
            if path is None:
                raise InputError("command line", "a file after --config")
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif arg.startswith("config="):
            path = arg.split("=", 1)[1]
        elif "=" in arg and not arg.startswith("-"):
            overrides.append(arg)
        else:
            raise InputError("command line", "key=value overrides or --config FILE", arg)
    return path, overrides


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            items.extend(_flatten(value, name + "."))
        else:
            items.append((name, value))
    return items


def _all_keys(obj, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(_all_keys(value, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def set_value(config: TrainConfig, key: str, value: Any, source: str = "config") -> None:
    parts = key.split(".")
    target = config
    for part in parts[:-1]:
        sub = getattr(target, part, None) if dataclasses.is_dataclass(target) else None
        if not dataclasses.is_dataclass(sub):
            target = None
            break
        target = sub
    fields = {f.name: f for f in dataclasses.fields(target)} if target is not None else {}
    if parts[-1] not in fields or dataclasses.is_dataclass(getattr(target, parts[-1])):
        close = difflib.get_close_matches(key, _all_keys(config), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(source, f"a known config key{hint}", f"unknown key {key!r}")
    hints = typing.get_type_hints(type(target))
    setattr(target, parts[-1], _coerce(value, hints[parts[-1]], key, source))


def _coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key, source)
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(v, args[0], key, source) for v in items]
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/off/false as False: `mixed_precision=no`
            return "yes" if value else "no"
        if isinstance(value, (str, int, float)):
            return str(value)
    raise InputError(source, f"{key} to be {_type_name(kind)}", value)


def _type_name(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is list:
        return f"a list of {_type_name(args[0])}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def validate(config: TrainConfig) -> None:
    for key, allowed in CHOICES.items():
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        if value not in allowed:
            raise InputError("config", f"{key} to be one of {', '.join(allowed)}", value)
    positive = {"batch_size": config.batch_size, "grad_accum": config.grad_accum,
                "model.max_length": config.model.max_length}
    for key, value in positive.items():
        if value < 1:
            raise InputError("config", f"{key} >= 1", value)
    if config.model.export_as_cls and config.model.pooling not in ("mean", "cls"):
        raise InputError("config", "model.pooling=mean with model.export_as_cls=true", config.model.pooling)
    if config.model.dropout is not None and not 0 <= config.model.dropout < 1:
        raise InputError("config", "model.dropout in [0, 1), or null for the base's own", config.model.dropout)
    if config.model.chunk_rows < 0:
        raise InputError("config", "model.chunk_rows >= 0 (0: no chunks)", config.model.chunk_rows)
    if config.max_steps < 0 or config.epochs < 1 and config.max_steps == 0:
        raise InputError("config", "max_steps > 0, or max_steps=0 with epochs >= 1",
                         f"max_steps={config.max_steps} epochs={config.epochs}")
    if config.views.generated < 0 or config.views.generated and not config.views.paraphrases:
        raise InputError("config", "views.generated >= 0, and views.paraphrases=FILE when views.generated > 0",
                         f"generated={config.views.generated} paraphrases={config.views.paraphrases}")
    if min(config.views.dropout, config.views.eda, config.views.repeat) < 0 or not 0 <= config.views.dup_rate <= 1:
        raise InputError("config", "views.dropout, views.eda and views.repeat >= 0, views.dup_rate in [0, 1]",
                         f"dropout={config.views.dropout} eda={config.views.eda} repeat={config.views.repeat} "
                         f"dup_rate={config.views.dup_rate}")
    if config.data.length_groups < 0:
        raise InputError("config", "data.length_groups >= 0 (0 or 1: batches in stream order)",
                         config.data.length_groups)
    if config.loss.temperature <= 0:
        raise InputError("config", "loss.temperature > 0", config.loss.temperature)
    if config.loss.queue_size < 0 or not 0.0 <= config.loss.momentum <= 1.0:
        raise InputError("config", "loss.queue_size >= 0 and loss.momentum in [0, 1]",
                         f"queue_size={config.loss.queue_size} momentum={config.loss.momentum}")
    if config.loss.anchor_weight < 0:
        raise InputError("config", "loss.anchor_weight >= 0 (0: no anchor)", config.loss.anchor_weight)
    if config.loss.anchor_sentences < 0:
        raise InputError("config", "loss.anchor_sentences >= 0 (0: every sentence of the batch)",
                         config.loss.anchor_sentences)
    distill = config.distill
    if distill.student_layers < 0:
        raise InputError("config", "distill.student_layers >= 0", distill.student_layers)
    if distill.lm_weight < 0 or distill.lm_weight > 0 and not distill.pairs:
        raise InputError("config", "distill.lm_weight >= 0, and distill.pairs=FILE (similar sentences) "
                         "when distill.lm_weight > 0", f"lm_weight={distill.lm_weight} pairs={distill.pairs}")
    if distill.lm_weight > 0 and config.model.pooling != "cls":
        raise InputError("config", "model.pooling=cls for a generator student (distill.lm_weight > 0): "
                         "its sentence vector is the [CLS] state", config.model.pooling)
    if config.loss.queue_size and config.loss.name not in ("luse", "simcse_unsup", "simcse_sup"):
        raise InputError("config", "loss.queue_size=0 with this loss (the momentum queue serves luse, "
                         "simcse_unsup and simcse_sup)", f"loss.name={config.loss.name}")


def to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)


def save_config(config: TrainConfig, path: Path) -> None:
    from luse.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), allow_unicode=True, sort_keys=False))
