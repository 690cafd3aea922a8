"""What every recipe does: read the config, build the objective and its data, train, report.

Recipes in ``recipes/`` are a few lines that call ``run_recipe`` with their default YAML, so the
wiring below is the one place where config keys meet library objects.
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

from luse.config import TrainConfig, load_config, split_argv
from luse.errors import InputError

logger = logging.getLogger("luse")

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


def corpus_items(config: TrainConfig) -> Callable[[int], Iterator[str]]:
    """Unlabelled sentences, streamed and shuffled per epoch.

    Skipped lines are counted per epoch in ``make_items.skips`` (read in this process when
    ``data.num_workers=0``); a worker process logs its own count when it finishes a pass.
    """
    from luse.data.corpus import sentence_stream
    from luse.data.skips import SkipCounter

    data = config.data

    def make_items(epoch: int) -> Iterator[str]:
        skips = make_items.skips[epoch] = SkipCounter()
        yield from sentence_stream(data.corpus, seed=config.seed, epoch=epoch,
                                   shuffle_buffer_size=data.shuffle_buffer, split=data.split_sentences,
                                   min_chars=data.min_chars, max_chars=data.max_chars, dedup=data.dedup,
                                   field=data.field, column=data.column, skips=skips)
        if skips.total and _in_worker() == 0:
            logger.info("data, epoch %d: %s", epoch, skips.report())

    make_items.skips = {}
    return make_items


def report_skips(make_items) -> None:
    for epoch, skips in sorted(getattr(make_items, "skips", {}).items()):
        if skips.total:
            logger.info("data, epoch %d (as far as read): %s", epoch, skips.report())


def _in_worker() -> int | None:
    """DataLoader worker id, or None in the main process."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return info.id if info is not None else None


def in_memory_items(rows: list, seed: int) -> Callable[[int], Iterator]:
    """Small supervised sets: held in memory, reshuffled each epoch from (seed, epoch)."""

    def make_items(epoch: int) -> Iterator:
        order = list(range(len(rows)))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        return (rows[i] for i in order)

    return make_items


def build_augmenter(config: TrainConfig):
    """EDA views from the synonym cache (built on first use when absent)."""
    from augment.eda import EDA
    from augment.synonym_cache import SynonymCache, default_cache_path, load_or_build_default

    views = config.views
    if views.synonym_cache:
        cache = SynonymCache.load(views.synonym_cache)
    elif views.language == "zh":
        cache = load_or_build_default(build_if_missing=True)
    else:
        raise InputError("config", f"views.synonym_cache for language {views.language!r} "
                         f"(build one with `make synonym-cache VECTORS=...`; default path {default_cache_path()})")
    eda = EDA(cache.synonyms, language=views.language, alpha_sr=views.alpha_sr, alpha_ri=views.alpha_ri,
              alpha_rs=views.alpha_rs, p_rd=views.p_rd, extra_words=cache.vocab)
    return eda.views


def build_paraphraser(config: TrainConfig):
    """Pre-generated paraphrase views (``views.paraphrases``, from ``luse generate --in --out``), or None."""
    if not config.views.generated:
        return None
    from augment.paraphrases import ParaphraseViews

    return ParaphraseViews(config.views.paraphrases)


def build_task(config: TrainConfig, tokenizer) -> tuple[object, Callable[[int], Iterable]]:
    """The objective and the item stream for ``config.loss.name``."""
    from luse.objectives import PairsObjective, TripletObjective, ViewsObjective

    name, max_length = config.loss.name, config.model.max_length
    if name in ("luse", "simcse_unsup"):
        augmenter = build_augmenter(config) if config.views.eda else None
        objective = ViewsObjective(tokenizer, max_length, config.views, config.loss, augmenter,
                                   paraphraser=build_paraphraser(config))
        return with_queue(config, objective), corpus_items(config)
    from luse.data.supervised import read_pairs, read_triplets

    files = [Path(p) for p in config.data.corpus]
    if name == "simcse_sup":
        rows = [row for f in files for row in read_triplets(f)]
        objective = TripletObjective(tokenizer, max_length, config.loss)
        return with_queue(config, objective), in_memory_items(rows, config.seed)
    if name in ("cross_bce", "cross_mse"):
        raise InputError("config", f"a bi-encoder loss here; loss.name={name} trains a cross-encoder: "
                         "use recipes/cross_encoder.py")
    if name != "cosent":  # e.g. roformer_sim: its own recipe builds its own task
        raise InputError("config", f"luse, simcse_unsup, simcse_sup or cosent in this recipe; loss.name={name} "
                         f"has its own recipe (recipes/{name}.py)")
    rows = [row for f in files for row in read_pairs(f)]
    return PairsObjective(tokenizer, max_length, config.loss), in_memory_items(rows, config.seed)


def with_queue(config: TrainConfig, objective):
    """``objective`` with a momentum encoder and negative queue when ``loss.queue_size > 0``."""
    if not config.loss.queue_size:
        return objective
    from luse.momentum import MomentumObjective

    return MomentumObjective(objective, config.loss.queue_size, config.loss.momentum)


def build_evaluator(config: TrainConfig, make_items: Callable[[int], Iterable]):
    """STS Spearman when ``eval.sts`` files are given, else label-free alignment/uniformity."""
    from luse.data.sts import read_sts
    from luse.evaluation import evaluate_sts, format_table, label_free_metrics

    sts_sets = [read_sts(path) for path in config.eval.sts]  # bad files fail now, not after training

    if sts_sets:
        def evaluate(encoder) -> dict:
            results = evaluate_sts(encoder, sts_sets, poolings=[encoder.pooling], whitening=(False,),
                                   batch_size=config.eval.batch_size)
            scores = [row[encoder.pooling] for row in results.values()]
            metrics = {f"{name}/{key}": value for name, row in results.items() for key, value in row.items()}
            return {"score": sum(scores) / len(scores), "results": results, "metrics": metrics,
                    "table": format_table(results)}
        return evaluate

    sample = [item for item in islice(make_items(0), config.eval.label_free_sentences) if isinstance(item, str)]
    if len(set(sample)) < 2:  # alignment/uniformity need at least two distinct sentences
        return None

    def evaluate(encoder) -> dict:
        metrics = label_free_metrics(encoder, sample)
        table = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        return {"score": None, "metrics": metrics, "table": f"label-free ({len(sample)} sentences): {table}"}

    return evaluate


def setup_logging() -> None:
    """luse's own messages at INFO on stderr, whatever the libraries did to the root logger."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s luse: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def load_encoder_for(config: TrainConfig):
    """The trained model of the sentence-vector recipes: a SentenceEncoder from ``config.model``."""
    from luse.encoder import SentenceEncoder

    model = config.model
    return SentenceEncoder.from_pretrained(model.name_or_path, pooling=model.pooling, mlp=model.mlp,
                                           max_length=model.max_length,
                                           attn_implementation=model.attn_implementation,
                                           chunk_rows=model.chunk_rows, cls_only=model.cls_only,
                                           unpad=model.unpad, fast_dropout=model.fast_dropout)


def run_recipe(name: str, default_config: Path, argv: list[str] | None = None, *,
               build_model: Callable[[TrainConfig], object] = load_encoder_for,
               build_task: Callable = build_task, export: Callable | None = None,
               build_evaluator: Callable = build_evaluator) -> int:
    """Entry point of ``recipes/NAME.py``: ``[--config FILE] key=value ...``; returns an exit code.

    Recipes whose model or objective differ from the sentence-vector ones pass their own
    ``build_model(config) -> model`` (it must have a ``tokenizer``), ``build_task(config,
    tokenizer) -> (objective, make_items)``, ``export`` (see :func:`luse.trainer.train`) and
    ``build_evaluator(config, make_items) -> evaluate | None``.
    """
    from luse.trainer import NonFiniteLossError, train

    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    try:
        path, overrides = split_argv(argv)
        config = load_config(path or default_config, overrides)
        encoder = build_model(config)
        objective, make_items = build_task(config, encoder.tokenizer)
        evaluate = build_evaluator(config, make_items)
        result = train(config, objective, make_items, encoder=encoder, project=name, evaluate=evaluate,
                       export=export)
        if config.data.num_workers == 0:
            report_skips(make_items)
    except (InputError, OSError) as err:  # bad input, a missing file, a failed save (full disk)
        print(f"{name}: error: {' '.join(str(err).split())}", file=sys.stderr)  # one line, whatever raised it
        return 2
    except NonFiniteLossError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 1
    return EXIT_CODES.get(result.interrupted, 1) if result.interrupted else 0
