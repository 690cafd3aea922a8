"""The training loop: plain PyTorch over HF accelerate, no Trainer subclass.

One loop serves every recipe: an objective (:class:`luse.objectives.base.Objective`) says how items
become a block of texts and how their embeddings become a loss; this module does the rest. It reads
top to bottom like accelerate's examples:

``setup``                accelerator, model, optimizer, scheduler, checkpoint registration, resume
``batches``              the global batches, epoch after epoch, from where a resumed run left off
``train_step``           forward, loss, backward, clipping, optimizer step (:mod:`luse.train.step`)
``LogWindow``            loss, learning rate and sentences/s every ``log_every`` steps
``evaluate_and_export``  evaluation every ``eval.every`` steps, ``best/`` and ``final/`` exports

Around them: atomic checkpoints with exact resume (:mod:`luse.train.checkpoint`), graceful
SIGINT/SIGTERM (:mod:`luse.train.signals`) and non-finite loss handling (``on_nan``). Distribution is
accelerate's: the same code runs on one CPU or under ``accelerate launch`` on many GPUs and nodes.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from luse.config import TrainConfig, to_dict
from luse.data.loader import BatchStream, make_loader
from luse.errors import InputError
from luse.model.encoder import SentenceEncoder, encoder_from_config
from luse.objectives.base import Hooks, Objective, hooks
from luse.train.checkpoint import TrainState, check_no_earlier_run, load_resume, save_checkpoint
from luse.train.precision import cpu_threads, resolve_mixed_precision
from luse.train.signals import GracefulStop
from luse.train.step import NonFiniteLossError, all_processes, train_step

logger = logging.getLogger("luse")


@dataclass
class TrainResult:
    step: int
    final_dir: Path | None
    best_dir: Path | None
    last_eval: dict = field(default_factory=dict)
    interrupted: str | None = None  # the signal's name when a signal stopped the run


@dataclass
class Run:
    """What :func:`setup` builds and the rest of :func:`train` works with."""

    config: TrainConfig
    accelerator: Any
    model: torch.nn.Module  # prepared by accelerate (wrapped under DDP)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: TrainState
    hooks: Hooks
    total_steps: int
    config_yaml: str

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)


def train(config: TrainConfig, objective: Objective, make_items: Callable[[int], Iterable], *,
          encoder: SentenceEncoder | None = None, project: str = "luse",
          evaluate: Callable[[SentenceEncoder], dict] | None = None,
          export: Callable[..., Any] | None = None) -> TrainResult:
    """Train ``encoder`` (built from ``config.model`` when None) on ``make_items(epoch)`` with ``objective``.

    ``evaluate(encoder) -> {"score": float | None, "table": str, "metrics": {...}}`` runs every
    ``config.eval.every`` steps and at the end on the main process; the best score is exported
    to ``OUTPUT/best``, the last model always to ``OUTPUT/final``, with
    ``export(model, out_dir, metadata=...)`` (default: :func:`luse.model.export.export_encoder`).
    """
    from luse.model.export import export_encoder

    export = export or functools.partial(export_encoder, as_cls=config.model.export_as_cls)
    run = setup(config, objective, make_items, encoder, project)
    accelerator, state = run.accelerator, run.state
    progress = _progress(accelerator, run.total_steps, state.step)
    window = LogWindow(items_per_step=config.batch_size * accelerator.num_processes)
    last_eval: dict = {}
    interrupted = None
    # Seconds spent training (batches and steps, not evaluation or checkpoints), saved with the export:
    # what a wall-clock comparison with another trainer needs (benchmarks/domains.py).
    started, paused = time.perf_counter(), 0.0
    with GracefulStop() as stop, closing(batches(run, objective, make_items)) as stream:
        for batch in stream:
            loss = train_step(accelerator, run.model, run.optimizer, run.scheduler, run.hooks, batch,
                              grad_cache_chunk=config.grad_cache_chunk, max_grad_norm=config.max_grad_norm)
            if loss is None:
                skip_or_stop(config, state)
            state.micro_steps += 1
            window.add(loss)
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            progress.update(1)
            if state.step % config.log_every == 0 or state.step == run.total_steps:
                window.log(run, progress)
            pause = time.perf_counter()
            if config.eval.every and state.step % config.eval.every == 0 and state.step < run.total_steps:
                last_eval = evaluate_and_export(run, evaluate, export)
            if config.save_every and state.step % config.save_every == 0:
                checkpoint(run)
            paused += time.perf_counter() - pause
            interrupted = _any_process_stopping(accelerator, stop)
            if interrupted or state.step >= run.total_steps:
                break
    progress.close()
    train_seconds = round(time.perf_counter() - started - paused, 2)
    if interrupted:
        checkpoint(run)
        accelerator.print(f"stopped by {interrupted} at step {state.step}; checkpoint saved. "
                          f"Continue with: resume=latest output_dir={run.output_dir}")
        accelerator.end_training()
        return TrainResult(state.step, None, None, last_eval, interrupted)
    return finish(run, evaluate, export, train_seconds)


# --- setup -----------------------------------------------------------------------------------------

def banner(config: TrainConfig, accelerator, total_steps: int) -> str:
    """One line that says what this run does: the launcher's own notes (``--mixed_precision 'no'``, thread
    counts) describe the launch, not the precision and threads the run picks for itself."""
    precision = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}.get(accelerator.mixed_precision,
                                                                                     accelerator.mixed_precision)
    if config.mixed_precision == "auto":
        why = ("native bf16" if accelerator.mixed_precision == "bf16" else
               "no native bf16 here" if accelerator.device.type == "cpu" else "no bf16 on this GPU")
        precision += f" (mixed_precision=auto: {why})"
    device = accelerator.device.type
    if device == "cpu":
        device += f", {torch.get_num_threads()} threads per process"
    processes = accelerator.num_processes
    return (f"luse: {config.model.name_or_path} on {device}, {processes} process{'es' if processes > 1 else ''}, "
            f"{precision}, batch {config.batch_size * processes * config.grad_accum} sentences, {total_steps} steps "
            f"-> {config.output_dir}")


def setup(config: TrainConfig, objective: Objective, make_items: Callable[[int], Iterable],
          encoder: SentenceEncoder | None = None, project: str = "luse") -> Run:
    """Accelerator, model, optimizer and scheduler; the checkpointed state registered and, with
    ``resume``, restored; ``config.yaml`` written. Fails before anything is written to the output
    directory on data that cannot fill one batch and on an earlier run's checkpoints without
    ``resume``, and before any training on an unwritable output directory."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from transformers import get_scheduler

    from luse.io import atomic_write_text, check_writable

    output_dir = Path(config.output_dir)
    if not config.resume:
        check_no_earlier_run(output_dir)  # never mix two runs' checkpoints
    made_output_dir = not output_dir.exists()
    check_writable(output_dir)  # fail before hours of training, not at the first save
    objective_hooks = hooks(objective)
    if config.grad_cache_chunk and objective_hooks.model_loss is not None:
        raise ValueError(f"grad_cache_chunk is not supported by {type(objective).__name__} "
                         "(its loss needs the whole model, not only sentence vectors); set grad_cache_chunk=0")
    accelerator = Accelerator(
        # Without a GPU, run on CPU even under a multi-process launch (gloo): accelerate would
        # otherwise start independent single processes.
        cpu=not torch.cuda.is_available(),
        mixed_precision=resolve_mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.grad_accum,
        log_with="tensorboard" if config.report_to == "tensorboard" else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        step_scheduler_with_optimizer=False,
    )
    try:
        check_enough_data(config, make_items, accelerator.num_processes)
    except InputError:
        if made_output_dir and accelerator.is_main_process and not any(output_dir.iterdir()):
            output_dir.rmdir()  # leave nothing that looks like a run
        raise
    set_seed(config.seed)
    if accelerator.device.type == "cpu":
        torch.set_num_threads(cpu_threads(config.threads))
    if encoder is None:
        encoder = encoder_from_config(config.model)
    total_steps = config.max_steps or count_steps(config, make_items, accelerator.num_processes)
    optimizer = build_optimizer(encoder, config.lr, config.weight_decay)
    # The scheduler is stepped by hand once per optimizer step (accelerate would step it once per process).
    scheduler = get_scheduler(config.scheduler, optimizer, num_warmup_steps=int(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer = accelerator.prepare(encoder, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    if objective_hooks.setup is not None:
        objective_hooks.setup(accelerator, model)
    if objective_hooks.stateful:
        accelerator.register_for_checkpointing(objective)

    accelerator.print(banner(config, accelerator, total_steps))
    config_yaml = yaml.safe_dump(to_dict(config), allow_unicode=True, sort_keys=False)
    resume_dir = load_resume(accelerator, config.resume, output_dir)
    if resume_dir is not None:
        accelerator.print(f"resumed from {resume_dir} at step {state.step}")
    if accelerator.is_main_process:
        atomic_write_text(output_dir / "config.yaml", config_yaml)
    if config.report_to == "tensorboard":
        accelerator.init_trackers(project, config=_flat_hparams(config))
    model.train()  # from_pretrained leaves the backbone in eval mode: dropout views need train mode
    return Run(config, accelerator, model, optimizer, scheduler, state, objective_hooks, total_steps, config_yaml)


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; biases and LayerNorm weights get no weight decay (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        # The fused kernel (CPU and CUDA) where torch has it: faster optimizer steps
        # (benchmarks/results/throughput.md, --explore).
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without the fused kernel
        return torch.optim.AdamW(groups, lr=lr)


def count_steps(config: TrainConfig, make_items: Callable[[int], Iterable], world_size: int) -> int:
    """Optimizer steps for ``epochs`` passes (a counting pass over the stream: cheap next to training)."""
    items = sum(1 for _ in make_items(0))
    batches_per_epoch = items // (config.batch_size * world_size)
    steps = config.epochs * batches_per_epoch // config.grad_accum
    if steps < 1:
        raise InputError(_data_name(config), f"enough items for one step of batch_size={config.batch_size} x "
                         f"{world_size} process(es) x grad_accum={config.grad_accum} in {config.epochs} epoch(s)",
                         got=items, hint=_read_report(make_items) or "or set max_steps")
    return steps


def check_enough_data(config: TrainConfig, make_items: Callable[[int], Iterable], world_size: int) -> None:
    """Fail, in one line saying what was read and skipped, when the data cannot fill one global batch
    (an empty corpus, one whose every line was skipped): before the output directory is touched.
    Reads only as far as the first batch (and a shuffle buffer)."""
    need = config.batch_size * world_size
    items = iter(make_items(0))
    try:
        got = sum(1 for _ in itertools.islice(items, need))
    finally:
        if hasattr(items, "close"):  # a generator: stop its reads now; a plain iterator has nothing to close
            items.close()
    if got < need:
        raise InputError(_data_name(config), f"at least {need} items for one batch (batch_size={config.batch_size} "
                         f"x {world_size} process(es))", got=got, hint=_read_report(make_items))


def _data_name(config: TrainConfig) -> str:
    corpus = config.data.corpus
    return "data.corpus=[" + ",".join(map(str, corpus)) + "]" if corpus else "data.corpus (none given)"


def _read_report(make_items) -> str | None:
    """What the items' readers read and skipped in epoch 0 (``make_items.skips``, as
    :class:`luse.data.items.CorpusItems` keeps them), or None when they do not say."""
    skips = getattr(make_items, "skips", {}).get(0)
    if skips is None:
        return None
    return skips.report() if skips.total else f"read {skips.seen:,} lines, skipped none"


# --- the batches -----------------------------------------------------------------------------------

def batches(run: Run, objective: Objective, make_items: Callable[[int], Iterable]) -> Iterator[dict]:
    """This process's share of the global batches, epoch after epoch for as long as the caller takes
    them, from the resumed position on; ``run.state.epoch`` and ``batches_in_epoch`` follow along, so
    a checkpoint taken between two batches resumes with the next one. One DataLoader (one set of workers,
    forked once while the trainer is small) serves every epoch."""
    config, state, accelerator = run.config, run.state, run.accelerator
    stream = BatchStream(make_items, objective.collate, batch_size=config.batch_size,
                         rank=accelerator.process_index, world_size=accelerator.num_processes,
                         seed=config.seed, epoch=state.epoch, skip_batches=state.batches_in_epoch,
                         length_groups=config.data.length_groups, all_epochs=True)
    loader = make_loader(stream, config.data.num_workers)
    for batch in loader:
        if loader.epoch != state.epoch:
            state.epoch, state.batches_in_epoch = loader.epoch, 0
        state.batches_in_epoch += 1
        yield batch
    # The stream ends only at an epoch without one complete batch.
    raise InputError(_data_name(config), f"at least one complete batch of "
                     f"{config.batch_size * accelerator.num_processes} items in an epoch",
                     got="none", hint="lower batch_size or check data.corpus")


def skip_or_stop(config: TrainConfig, state: TrainState) -> None:
    """A micro-batch whose loss or gradient was not finite: stop (``on_nan=stop``) or skip it."""
    where = f"step {state.step + 1} (micro-batch {state.micro_steps + 1}, epoch {state.epoch})"
    if config.on_nan == "stop":
        raise NonFiniteLossError(
            f"non-finite loss or gradient at {where}: stopping; the last checkpoint "
            f"in {config.output_dir}/checkpoints is intact (set on_nan=skip to skip such steps, "
            "or lower lr / raise loss.temperature)")
    logger.warning("non-finite loss or gradient at %s: step skipped", where)
    state.skipped_steps += 1


# --- logging ---------------------------------------------------------------------------------------

class LogWindow:
    """Losses and items since the last log line; :meth:`log` reports and restarts it."""

    def __init__(self, items_per_step: int):
        self.items_per_step = items_per_step
        self.start, self.items, self.losses = time.perf_counter(), 0, []

    def add(self, loss: float | None) -> None:
        self.items += self.items_per_step
        if loss is not None:
            self.losses.append(loss)

    def log(self, run: Run, progress) -> None:
        elapsed = time.perf_counter() - self.start
        stats = {"loss": _mean_over_processes(run.accelerator, self.losses),
                 "lr": run.scheduler.get_last_lr()[0], "sentences_per_s": self.items / elapsed}
        run.accelerator.log(stats, step=run.state.step)
        progress.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}",
                             sent_s=f"{stats['sentences_per_s']:.1f}")
        self.start, self.items, self.losses = time.perf_counter(), 0, []


def _mean_over_processes(accelerator, losses: list[float]) -> float:
    """The window's mean loss over every process: each holds its share of the global batch's loss
    (see :func:`luse.losses.distributed.global_mean_share`), so rank 0's own value alone is not the loss."""
    local = sum(losses) / max(len(losses), 1)
    if accelerator.num_processes == 1:
        return local
    return float(accelerator.reduce(torch.tensor([local], device=accelerator.device), reduction="mean").item())


def _progress(accelerator, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                disable=not accelerator.is_local_main_process)


def _flat_hparams(config: TrainConfig) -> dict:
    """TensorBoard hparams take only scalars: flatten the config to dotted keys."""
    flat = {}

    def walk(prefix: str, mapping: dict) -> None:
        for key, value in mapping.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", to_dict(config))
    return flat


# --- evaluation, checkpoints and the end -----------------------------------------------------------

def evaluate_and_export(run: Run, evaluate: Callable | None, export: Callable) -> dict:
    """Evaluate on the main process; a new best score exports the model to ``OUTPUT/best``."""
    accelerator, state = run.accelerator, run.state
    result: dict = {}
    if accelerator.is_main_process and evaluate is not None:
        with torch.random.fork_rng(devices=[]):  # evaluation must not shift the training RNG
            result = evaluate(accelerator.unwrap_model(run.model))
        score = result.get("score")
        accelerator.log({f"eval/{k}": v for k, v in result.get("metrics", {}).items()}, step=state.step)
        if score is not None and (state.best_score is None or score > state.best_score):
            state.best_score, state.best_step = score, state.step
            export(accelerator.unwrap_model(run.model), run.output_dir / "best",
                   metadata={"step": state.step, "score": score, "config": to_dict(run.config)})
        accelerator.print(result.get("table", ""))
    accelerator.wait_for_everyone()
    return result


def checkpoint(run: Run) -> None:
    save_checkpoint(run.accelerator, run.output_dir, run.state.step, run.config_yaml,
                    keep=run.config.keep_checkpoints)


def finish(run: Run, evaluate: Callable | None, export: Callable, train_seconds: float) -> TrainResult:
    """The last evaluation, a checkpoint, and the ``OUTPUT/final`` export (``train_seconds``: this
    process's time in the training loop, recorded in its metadata)."""
    accelerator, state = run.accelerator, run.state
    last_eval = evaluate_and_export(run, evaluate, export)
    if run.config.save_every:
        checkpoint(run)
    final_dir = run.output_dir / "final"
    if accelerator.is_main_process:
        export(accelerator.unwrap_model(run.model), final_dir,
               metadata={"step": state.step, "train_seconds": train_seconds, "eval": _jsonable(last_eval),
                         "config": to_dict(run.config)})
        accelerator.print(f"exported {final_dir}" + (f"; best step {state.best_step} -> {run.output_dir / 'best'}"
                                                      if state.best_step is not None else ""))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    best_dir = run.output_dir / "best" if state.best_step is not None else None
    return TrainResult(state.step, final_dir, best_dir, last_eval)


def _any_process_stopping(accelerator, stop: GracefulStop) -> str | None:
    if accelerator.num_processes == 1:
        return stop.signal_name
    stopping = not all_processes(accelerator, stop.signal_name is None)
    return (stop.signal_name or "SIGTERM") if stopping else None


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)
