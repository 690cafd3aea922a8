"""Ship a trained :class:`~luse.model.encoder.SentenceEncoder` as a directory that needs no luse to use.

The exported directory is, at the same time:

* a plain Hugging Face checkpoint (``config.json``, ``model.safetensors``, tokenizer files), so
  ``AutoModel.from_pretrained(out)`` works and the model card says which output is the sentence
  vector (``pooler_output``, ``[0][:, 0]``, or a masked mean);
* a sentence-transformers model (``modules.json``, ``sentence_bert_config.json``, ``1_Pooling`` and,
  for ``pooling='pooler'``, a ``2_Dense`` holding BERT's pooler), so ``SentenceTransformer(out)``
  returns exactly the vectors :meth:`SentenceEncoder.encode` returns;
* a luse model: ``luse.json`` records the pooling, ``max_length``, the luse version and whatever
  the trainer passes as ``metadata``, and :func:`load_encoder` reads it back.

The sentence-transformers files use the classic layout (``sentence_transformers.models.*`` class
paths, ``pooling_mode_*_token`` flags) on purpose: every release from 2.x to 6.x loads it, whereas
a directory saved by a recent release does not load in older ones.

SimCSE's train-only MLP is never exported: it belongs to the training objective, not to the model.

Example::

    from luse.model.export import export_encoder, load_encoder

    export_encoder(encoder, "runs/simcse-zh/export", metadata={"stsb_spearman": 0.81})
    encoder = load_encoder("runs/simcse-zh/export")

    # elsewhere, with only sentence-transformers installed:
    from sentence_transformers import SentenceTransformer
    vectors = SentenceTransformer("runs/simcse-zh/export").encode(["今天天气很好"])
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from luse import __version__
from luse.errors import InputError
from luse.io import atomic_dir, check_writable, cleanup_stale, resolve_model
from luse.model.encoder import DEFAULT_POOLING, POOLINGS, SentenceEncoder

logger = logging.getLogger(__name__)

LUSE_FILE = "luse.json"
FORMAT_VERSION = 1

# luse pooling -> sentence-transformers Pooling mode.  'pooler' is CLS followed by a Dense module
# that replays BERT's pooler; 'first_last_avg' reads two layers, which no ST module can express.
ST_POOLING_MODES = {"pooler": "cls", "cls": "cls", "mean": "mean"}

_LEGACY_ST_MODULE = "sentence_transformers.models.{}"


def export_encoder(encoder: SentenceEncoder, out_dir: str | os.PathLike, *,
                   metadata: Mapping[str, Any] | None = None, as_cls: bool = False) -> Path:
    """Write ``encoder`` to ``out_dir`` as a Hugging Face + sentence-transformers directory.

    The directory is built next to ``out_dir`` and swapped in only when complete (see
    :func:`luse.io.atomic_dir`), so an existing export is replaced atomically and a crash or
    a full disk never leaves a half-written one.

    Written files:

    * ``config.json``, ``model.safetensors``: the backbone, via ``save_pretrained``;
    * tokenizer files, with ``model_max_length`` set to ``encoder.max_length`` so a plain
      ``tokenizer(texts, truncation=True)`` truncates exactly as training did;
    * ``modules.json``, ``sentence_bert_config.json``, ``config_sentence_transformers.json``,
      ``1_Pooling/config.json`` and, for ``pooling='pooler'``, ``2_Dense/`` (the pooler's dense
      layer + tanh): the sentence-transformers model.  Skipped, with a warning in the log and in
      the model card, for ``first_last_avg`` and for poolers that are not dense + tanh;
    * ``luse.json``: pooling, max_length, luse version and ``metadata``;
    * ``README.md``: a model card that shows how to get the sentence vector without luse.

    Args:
        encoder: The trained encoder.  Its weights are read, never modified; it may be on any
            device and in train or eval mode.
        out_dir: The export directory.  Replaced if it exists; its parent is created if needed.
        metadata: Anything worth keeping with the model (training config, evaluation scores).
            Must be JSON-like: dicts, lists, tuples, strings, numbers, booleans, ``None``; paths,
            numpy / torch scalars and dataclasses are converted.
        as_cls: For a mean-pooled encoder: export it with one more, fixed layer whose [CLS] output is
            that mean (:mod:`luse.model.mean_layer`), declared as ``pooling='cls'``.

    Returns:
        Path: ``out_dir``.

    Raises:
        InputError: ``metadata`` holds a value that cannot be written as JSON, or ``out_dir`` is an
            existing file.
        OSError: The parent of ``out_dir`` is not writable.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "a directory to export into", got="an existing file")
    if as_cls and encoder.pooling not in ("mean", "cls"):
        raise InputError("model", "model.pooling=mean (or cls) with model.export_as_cls", encoder.pooling)
    mean_layer = as_cls and encoder.pooling == "mean"
    if mean_layer:
        from luse.model.mean_layer import mean_layer_support

        why = mean_layer_support(_unwrap(encoder.backbone))
        if why is None:
            encoder = _mean_as_cls(encoder)
        else:  # keep the trained vector: exported as mean pooling, as luse.json and the model card say
            logger.warning("%s exported with mean pooling, not as [CLS] (model.export_as_cls): %s; "
                           "train with model.pooling=cls for a CLS vector", out_dir, why)
            mean_layer = False
    plain_metadata = _plain_json(dict(metadata or {}), "metadata")
    no_st_reason = _why_no_sentence_transformers(encoder)

    low_space = check_writable(out_dir.parent, min_free_bytes=_export_bytes(encoder))
    if low_space:
        logger.warning("export to %s may fail: %s", out_dir, low_space)

    # What a killed earlier export left: its temp copy, or (killed between the two renames) the
    # complete previous export set aside, which is put back.
    cleanup_stale(out_dir.parent)
    with atomic_dir(out_dir) as folder:
        _save_backbone(encoder, folder)
        if no_st_reason is None:
            _save_sentence_transformers_modules(encoder, folder)
        _write_json(folder / LUSE_FILE, {
            "format": FORMAT_VERSION,
            "luse_version": __version__,
            "pooling": encoder.pooling,
            "max_length": encoder.max_length,
            "hidden_size": encoder.hidden_size,
            "backbone": type(_unwrap(encoder.backbone)).__name__,
            "sentence_transformers": no_st_reason is None,
            "mean_layer": mean_layer,
            "metadata": plain_metadata,
        })
        (folder / "README.md").write_text(model_card(encoder, out_dir.name, no_st_reason, plain_metadata, mean_layer),
                                          encoding="utf-8")
    if no_st_reason is not None:
        logger.warning("exported %s with Hugging Face files only, no sentence-transformers modules: %s",
                       out_dir, no_st_reason)
    return out_dir


def load_encoder(path: str | os.PathLike, *, pooling: str | None = None,
                 max_length: int | None = None) -> SentenceEncoder:
    """Load an export (or any Hugging Face checkpoint) back as a :class:`SentenceEncoder`.

    Pooling and max_length come from ``luse.json`` when the directory has one; otherwise (any
    other checkpoint, a hub name, ``m3e-small``) the :meth:`SentenceEncoder.from_pretrained`
    defaults apply (``pooling='pooler'``, ``max_length=64``).  Explicit arguments win over both.

    Args:
        path: An export directory, any local checkpoint, or a name ``from_pretrained`` accepts.
        pooling: Override the recorded pooling (one of :data:`luse.model.encoder.POOLINGS`).
        max_length: Override the recorded maximum number of tokens per sentence.

    Returns:
        SentenceEncoder: Without the training MLP, which exports never contain.

    Raises:
        InputError: ``luse.json`` exists but is malformed.
    """
    info = read_export_info(path) or {}
    return SentenceEncoder.from_pretrained(
        os.fspath(path),
        pooling=pooling or info.get("pooling", DEFAULT_POOLING),
        max_length=max_length or info.get("max_length", 64),
    )


def read_export_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The validated contents of ``path/luse.json``, or ``None`` if ``path`` has none."""
    file = Path(path) / LUSE_FILE
    if not file.is_file():
        return None
    try:
        info = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(file, "valid JSON", got=error.msg, line=error.lineno) from None
    if not isinstance(info, dict):
        raise InputError(file, "a JSON object", got=type(info).__name__)
    version = info.get("format", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise InputError(file, f"format <= {FORMAT_VERSION} (written by a newer luse? upgrade luse)",
                         got=str(version))
    if info.get("pooling", DEFAULT_POOLING) not in POOLINGS:
        raise InputError(file, f"pooling one of {', '.join(POOLINGS)}", got=str(info.get("pooling")))
    limit = info.get("max_length", 64)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InputError(file, "max_length a positive integer", got=str(limit))
    return info


def declared_pooling(path: str | os.PathLike, fallback: str) -> str:
    """The pooling a model directory says its vectors were trained with: ``luse.json``, then a
    sentence-transformers ``1_Pooling`` (CLS or mean), then m3e/uniem's ``uniem_embedding_strategy``;
    ``fallback`` when it says none (a hub name, a plain BERT)."""
    folder = Path(path)
    info = read_export_info(folder) if folder.is_dir() else None
    if info is not None:
        return info.get("pooling", DEFAULT_POOLING)
    pooling_file = folder / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        modes = json.loads(pooling_file.read_text(encoding="utf-8"))
        if modes.get("pooling_mode_mean_tokens"):
            return "mean"
        if modes.get("pooling_mode_cls_token"):
            return "cls"
    config_file = folder / "config.json"
    if config_file.is_file():
        strategy = json.loads(config_file.read_text(encoding="utf-8")).get("uniem_embedding_strategy", "")
        if isinstance(strategy, str) and strategy.endswith("mean"):
            return "mean"
    return fallback


def load_model(model: str, *, pooling: str | None = None, max_length: int | None = None,
               device: str | None = None):
    """A :class:`~luse.model.encoder.SentenceEncoder` for ``luse eval`` and other inference commands.

    An exported luse model (a directory with ``luse.json``) is loaded with its saved settings by
    ``luse.model.export.load_encoder``; any other encoder directory or hub name with
    ``SentenceEncoder.from_pretrained``. ``pooling`` and ``max_length`` override the saved settings
    when given.

    Raises:
        InputError: ``model`` is a path to no directory, or a directory without a model (a run's,
            a checkpoint's, an empty one: the line says which and where the model is;
            :func:`luse.io.resolve_model`).
        FileNotFoundError: If ``model`` is not loadable by name.
        ValueError: If the pooling does not fit the model (``pooler`` on a model without one).
    """
    import torch

    path = resolve_model(model)
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {', '.join(POOLINGS)}")
    try:
        if (Path(path) / LUSE_FILE).is_file():
            encoder = load_encoder(path)
        else:
            encoder = SentenceEncoder.from_pretrained(path, pooling=pooling or DEFAULT_POOLING)
    except OSError as err:
        if Path(path).exists():
            raise
        if Path(path).is_absolute() or path.startswith((".", "~")):
            raise FileNotFoundError(f"{model}: no such model directory") from err
        # Could be a hub name: keep the loader's first sentence (offline, unknown repo, ...).
        reason = " ".join(str(err).split()).split(". ")[0]
        raise FileNotFoundError(f"{model}: no such model directory, nor a loadable model name ({reason})") from err
    if pooling is not None and pooling != encoder.pooling:
        if pooling == "pooler" and getattr(encoder.backbone, "pooler", None) is None:
            raise ValueError(f"pooling 'pooler' needs a backbone with a pooler layer, and {model} has none; "
                             "use --pooling cls")
        encoder.pooling = pooling
    if max_length is not None:
        encoder.max_length = max_length
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    logger.info("loaded %s (pooling=%s, max_length=%d) on %s", model, encoder.pooling, encoder.max_length, device)
    return encoder.to(device).eval()


def _unwrap(module: nn.Module) -> nn.Module:
    """The model under a ``torch.compile`` wrapper, whose class name says nothing useful."""
    return getattr(module, "_orig_mod", module)


def _why_no_sentence_transformers(encoder: SentenceEncoder) -> str | None:
    """Why ST modules cannot reproduce this encoder's vectors, or ``None`` if they can."""
    if encoder.pooling not in ST_POOLING_MODES:
        return (f"pooling={encoder.pooling!r} combines two hidden layers, which sentence-transformers' "
                "Pooling cannot express")
    if encoder.pooling == "pooler":
        pooler = getattr(_unwrap(encoder.backbone), "pooler", None)
        if not (isinstance(getattr(pooler, "dense", None), nn.Linear)
                and isinstance(getattr(pooler, "activation", None), nn.Tanh)):
            return (f"the pooler of {type(_unwrap(encoder.backbone)).__name__} is not BERT's dense + tanh, "
                    "so no sentence-transformers Dense module can replay it")
    return None


def _mean_as_cls(encoder: SentenceEncoder) -> SentenceEncoder:
    """The encoder to export for ``as_cls``: a copy of the backbone with the mean layer, read at [CLS]."""
    from luse.model.mean_layer import append_mean_layer

    served = append_mean_layer(_unwrap(encoder.backbone))
    return SentenceEncoder(served, encoder.tokenizer, pooling="cls", max_length=encoder.max_length,
                           cls_only=False, unpad=False, fast_dropout=False)


def _export_bytes(encoder: SentenceEncoder) -> int:
    """Roughly what the export takes on disk: the backbone's tensors plus room for the small files."""
    tensors = [*encoder.backbone.parameters(), *encoder.backbone.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) + (1 << 20)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_backbone(encoder: SentenceEncoder, folder: Path) -> None:
    encoder.backbone.save_pretrained(folder)
    encoder.tokenizer.save_pretrained(folder)
    # Patch the saved copy, not the live tokenizer: the encoder may still be training.
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        config = json.loads(tokenizer_config.read_text(encoding="utf-8"))
        config["model_max_length"] = encoder.max_length
        _write_json(tokenizer_config, config)


def _save_sentence_transformers_modules(encoder: SentenceEncoder, folder: Path) -> None:
    from safetensors.torch import save_file

    hidden = encoder.hidden_size
    modules = [{"idx": 0, "name": "0", "path": "", "type": _LEGACY_ST_MODULE.format("Transformer")}]
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": encoder.max_length, "do_lower_case": False})
    _write_json(folder / "config_sentence_transformers.json", {
        "model_type": "SentenceTransformer",
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })

    mode = ST_POOLING_MODES[encoder.pooling]
    (folder / "1_Pooling").mkdir()
    _write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": _LEGACY_ST_MODULE.format("Pooling")})

    if encoder.pooling == "pooler":
        dense = _unwrap(encoder.backbone).pooler.dense
        (folder / "2_Dense").mkdir()
        _write_json(folder / "2_Dense" / "config.json", {
            "in_features": dense.in_features,
            "out_features": dense.out_features,
            "bias": dense.bias is not None,
            "activation_function": "torch.nn.modules.activation.Tanh",
        })
        weights = {"linear.weight": dense.weight}
        if dense.bias is not None:
            weights["linear.bias"] = dense.bias
        # Copies: safetensors refuses tensors that share storage with the live model.
        save_file({name: t.detach().to("cpu", copy=True).contiguous() for name, t in weights.items()},
                  str(folder / "2_Dense" / "model.safetensors"))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": _LEGACY_ST_MODULE.format("Dense")})

    _write_json(folder / "modules.json", modules)


def _plain_json(value: Any, where: str) -> Any:
    """``value`` as plain JSON types; ``where`` names the offending entry in the error."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)):
                raise InputError(where, "metadata keys that are strings or numbers", got=repr(key))
            plain[str(key)] = _plain_json(item, f"{where}[{key!r}]")
        return plain
    if isinstance(value, (list, tuple)):
        return [_plain_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        return [_plain_json(item, f"{where}[{i}]") for i, item in enumerate(sorted(value, key=str))]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain_json(dataclasses.asdict(value), where)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # numpy / torch scalars
        return _plain_json(value.item(), where)
    raise InputError(where, "a JSON value (dict, list, str, number, bool, None, path, numpy/torch scalar)",
                     got=type(value).__name__)


_HF_VECTOR_CODE = {
    "pooler": """\
embeddings = output.pooler_output  # the same as output[1]""",
    "cls": """\
embeddings = output.last_hidden_state[:, 0]  # the same as output[0][:, 0]""",
    "mean": """\
mask = batch["attention_mask"].unsqueeze(-1).to(output.last_hidden_state.dtype)
embeddings = (output.last_hidden_state * mask).sum(1) / mask.sum(1)""",
    "first_last_avg": """\
# hidden_states[0] is the embedding layer, [1] the first transformer layer, [-1] the last.
layers = (output.hidden_states[1] + output.hidden_states[-1]) / 2
mask = batch["attention_mask"].unsqueeze(-1).to(layers.dtype)
embeddings = (layers * mask).sum(1) / mask.sum(1)""",
}

_POOLING_WORDS = {
    "pooler": "BERT's pooler output (dense + tanh over the [CLS] state): `model(**batch)[1]`, "
              "i.e. `pooler_output`",
    "cls": "the [CLS] hidden state of the last layer: `model(**batch)[0][:, 0]`",
    "mean": "the mean of the last layer's token states over real (non-padding) tokens",
    "first_last_avg": "the mean over real (non-padding) tokens of (first layer + last layer) / 2, "
                      "computed from `output_hidden_states=True`",
}


def model_card(encoder: SentenceEncoder, name: str, no_st_reason: str | None = None,
               metadata: Mapping[str, Any] | None = None, mean_layer: bool = False) -> str:
    """The ``README.md`` of an export: what the sentence vector is and runnable code to get it.

    Args:
        encoder: The exported encoder.
        name: The export directory's name, used in the code examples (``./NAME``).
        no_st_reason: Why the export has no sentence-transformers modules, or ``None`` if it has.
        metadata: Top-level numbers, strings and booleans are listed under "Training".
        mean_layer: The last layer is luse's fixed mean layer (:mod:`luse.model.mean_layer`).
    """
    pooling, backbone = encoder.pooling, type(_unwrap(encoder.backbone)).__name__
    hidden_states = ", output_hidden_states=True" if pooling == "first_last_avg" else ""
    front = [
        "---",
        f"library_name: {'transformers' if no_st_reason else 'sentence-transformers'}",
        f"pipeline_tag: {'feature-extraction' if no_st_reason else 'sentence-similarity'}",
        "tags:",
        "- luse",
        "- sentence-embeddings",
        "- feature-extraction",
        "---",
    ]
    lines = [
        f"# {name}",
        "",
        f"A sentence encoder trained without labels with luse {__version__}: "
        f"a `{backbone}` whose sentence vector ({encoder.hidden_size} dimensions) is {_POOLING_WORDS[pooling]}. "
        "Compare vectors with cosine similarity.",
        "",
        *(["The last layer has fixed weights: its [CLS] output is the masked mean of the layer below (the encoder was "
           "trained with mean pooling; luse's `model.export_as_cls`).", ""] if mean_layer else []),
        f"Sentences were truncated to {encoder.max_length} tokens in training; the tokenizer's "
        "`model_max_length` is set to that, so `truncation=True` does the same.",
        "",
    ]
    if no_st_reason is None:
        lines += [
            "## sentence-transformers",
            "",
            "```python",
            "from sentence_transformers import SentenceTransformer",
            "",
            'sentences = ["今天天气很好", "今天是个好天气", "The weather is nice today."]',
            f'model = SentenceTransformer("./{name}")',
            "embeddings = model.encode(sentences)",
            "print(model.similarity(embeddings, embeddings))",
            "```",
            "",
        ]
    else:
        lines += [
            "## sentence-transformers",
            "",
            f"This export has no sentence-transformers modules: {no_st_reason}. Do not load it with "
            "`SentenceTransformer(...)`, which would silently fall back to mean pooling of the last layer "
            "and give different vectors; use the `transformers` code below.",
            "",
        ]
    lines += [
        "## transformers",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        'sentences = ["今天天气很好", "今天是个好天气", "The weather is nice today."]',
        f'tokenizer = AutoTokenizer.from_pretrained("./{name}")',
        f'model = AutoModel.from_pretrained("./{name}").eval()  # {backbone}',
        'batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")',
        "with torch.no_grad():",
        f"    output = model(**batch{hidden_states})",
        _HF_VECTOR_CODE[pooling],
        "```",
        "",
    ]
    scalars = {key: value for key, value in (metadata or {}).items()
               if isinstance(value, (bool, int, float, str)) and len(str(value)) <= 80}
    lines += ["## Training", ""]
    if scalars:
        lines += [*(f"- {key}: {value}" for key, value in scalars.items()), ""]
    lines += [
        f"The full training configuration and scores are in `{LUSE_FILE}`; "
        "`luse.model.export.load_encoder` loads this directory back into luse.",
        "",
    ]
    return "\n".join(front + lines)
