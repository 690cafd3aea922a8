"""The training loop: plain PyTorch over HF accelerate, no Trainer subclass.

One loop serves every recipe: an *objective* (see ``luse.objectives``) says how items become a
block of texts and how their embeddings become a loss; this file does the rest: optimisation
(AdamW, warm-up + decay, accumulation, clipping, mixed precision), GradCache, progress and
logging, periodic STS evaluation with best/final export, atomic checkpoints with exact resume,
graceful SIGINT/SIGTERM, and non-finite loss handling. Distribution is accelerate's: the same
code runs on one CPU or under ``accelerate launch`` on many GPUs and nodes.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from luse.checkpoint import TrainState, resolve_resume, save_checkpoint
from luse.config import TrainConfig, to_dict
from luse.data.loader import BatchStream, make_loader
from luse.encoder import SentenceEncoder
from luse.gradcache import grad_cache_step
from luse.objectives import MODEL_INPUTS

logger = logging.getLogger("luse")


class NonFiniteLossError(RuntimeError):
    """Raised (with on_nan=stop) when a loss or gradient is NaN or infinite."""


@dataclass
class TrainResult:
    step: int
    final_dir: Path | None
    best_dir: Path | None
    last_eval: dict = field(default_factory=dict)
    interrupted: str | None = None  # the signal's name when a signal stopped the run


class GracefulStop:
    """The first SIGINT/SIGTERM asks the loop to checkpoint and stop; a second one exits at once."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            logger.error("second signal: exiting without saving")
            raise SystemExit(128 + signum)
        self.signal_name = signal.Signals(signum).name
        logger.warning("%s received: saving a checkpoint after this step, then stopping "
                       "(send it again to exit at once)", self.signal_name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# CPU flags of native bf16 matrix units: AVX512-BF16 (Intel Cooper Lake+, AMD Zen 4+) and AMX.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware. There bf16 autocast makes a training
    step about 1.8x faster (m3e-small, 2 cores: benchmarks/results/throughput.md); elsewhere bf16 is
    emulated and slower than fp32. Reads the Linux CPU flags; False where they cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as stream:
            for line in stream:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in NATIVE_BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


def resolve_mixed_precision(setting: str, device: str | None = None) -> str:
    """``auto``: bf16 autocast where the hardware does bf16 natively (CUDA GPUs that support it, CPUs
    with AVX512-BF16 or AMX), else fp32. The weights and the optimizer stay fp32 either way.
    ``device`` ("cpu", "cuda", "cuda:N"): the one training runs on; None: CUDA when there, as the
    trainer's accelerator chooses."""
    if setting != "auto":
        return setting
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if cuda:
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def cpu_threads(requested: int = 0) -> int:
    """Threads for this process: ``requested``, or the usable cores shared among the local processes.

    ``accelerate launch`` sets OMP_NUM_THREADS=1 unless told otherwise (it counts physical cores,
    often 1 on a VM), which halves CPU training speed on a 2-core machine.
    """
    if requested > 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(1, cores // max(local, 1))


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; biases and LayerNorm weights get no weight decay (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        # The fused kernel (CPU and CUDA): about 3x faster optimizer steps on m3e-small on a quiet CPU
        # (a few % of a step), 5-8x when other work shares the cores (benchmarks/results/throughput.md).
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without the fused kernel
        return torch.optim.AdamW(groups, lr=lr)


def count_steps(config: TrainConfig, make_items: Callable[[int], Iterable], world_size: int) -> int:
    """Optimizer steps for ``epochs`` passes (a counting pass over the stream: cheap next to training)."""
    items = sum(1 for _ in make_items(0))
    batches = items // (config.batch_size * world_size)
    steps = config.epochs * batches // config.grad_accum
    if steps < 1:
        raise ValueError(f"the corpus has {items} items: not enough for one step of batch_size="
                         f"{config.batch_size} x {world_size} processes x grad_accum={config.grad_accum}")
    return steps


def train(config: TrainConfig, objective, make_items: Callable[[int], Iterable], *,
          encoder: SentenceEncoder | None = None, project: str = "luse",
          evaluate: Callable[[SentenceEncoder], dict] | None = None,
          export: Callable[..., None] | None = None) -> TrainResult:
    """Train ``encoder`` (loaded from ``config.model`` when None) on ``make_items(epoch)``.

    ``evaluate(encoder) -> {"score": float | None, "table": str, ...}`` runs every
    ``config.eval.every`` steps and at the end on the main process; the best score is exported
    to ``OUTPUT/best``, the last model always to ``OUTPUT/final``, with
    ``export(model, out_dir, metadata=...)`` (default: :func:`luse.export.export_encoder`).

    Optional objective hooks (an objective without them is a plain ``collate`` + ``loss``):

    ``model_loss(model, inputs, batch) -> loss``
        used instead of ``loss(model(**inputs), batch)`` when the loss needs more than the
        sentence vectors (an LM head, a teacher); not combinable with GradCache.
    ``setup(accelerator, model)``
        once after ``accelerator.prepare`` and before resuming (build a momentum encoder, move a
        teacher to the device).
    ``after_optimizer_step(model)``
        after every optimizer step (momentum updates, queue maintenance).
    ``state_dict()`` / ``load_state_dict(state)``
        extra state saved in every checkpoint and restored on resume (a negative queue).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from transformers import get_scheduler

    from luse.atomic import check_writable
    from luse.export import export_encoder

    export = export or export_encoder
    if config.grad_cache_chunk and hasattr(objective, "model_loss"):
        raise ValueError(f"grad_cache_chunk is not supported by {type(objective).__name__} "
                         "(its loss needs the whole model, not only sentence vectors); set grad_cache_chunk=0")
    output_dir = Path(config.output_dir)
    check_writable(output_dir)  # fail before hours of training, not at the first save
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
    set_seed(config.seed)
    if accelerator.device.type == "cpu":
        torch.set_num_threads(cpu_threads(config.threads))
    if encoder is None:
        encoder = SentenceEncoder.from_pretrained(
            config.model.name_or_path, pooling=config.model.pooling, mlp=config.model.mlp,
            max_length=config.model.max_length, attn_implementation=config.model.attn_implementation)
    world = accelerator.num_processes
    total_steps = config.max_steps or count_steps(config, make_items, world)
    optimizer = build_optimizer(encoder, config.lr, config.weight_decay)
    # The scheduler is stepped by hand once per optimizer step (accelerate would step it once per process).
    scheduler = get_scheduler(config.scheduler, optimizer, num_warmup_steps=int(config.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer = accelerator.prepare(encoder, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    if hasattr(objective, "setup"):
        objective.setup(accelerator, model)
    if hasattr(objective, "state_dict"):
        accelerator.register_for_checkpointing(objective)

    config_yaml = yaml.safe_dump(to_dict(config), allow_unicode=True, sort_keys=False)
    resume_dir = resolve_resume(config.resume, output_dir)
    if resume_dir is not None:
        accelerator.load_state(str(resume_dir))
        accelerator.print(f"resumed from {resume_dir} at step {state.step}")
    if accelerator.is_main_process:
        from luse.atomic import atomic_write_text

        atomic_write_text(output_dir / "config.yaml", config_yaml)
    if config.report_to == "tensorboard":
        accelerator.init_trackers(project, config=_flat_hparams(config))

    def encode(**inputs):
        with accelerator.autocast():
            return model(**inputs)

    def evaluate_and_export(final: bool) -> dict:
        result: dict = {}
        if accelerator.is_main_process and evaluate is not None:
            with torch.random.fork_rng(devices=[]):  # evaluation must not shift the training RNG
                result = evaluate(accelerator.unwrap_model(model))
            score = result.get("score")
            accelerator.log({f"eval/{k}": v for k, v in result.get("metrics", {}).items()}, step=state.step)
            if score is not None and (state.best_score is None or score > state.best_score):
                state.best_score, state.best_step = score, state.step
                export(accelerator.unwrap_model(model), output_dir / "best",
                               metadata={"step": state.step, "score": score, "config": to_dict(config)})
            accelerator.print(result.get("table", ""))
        accelerator.wait_for_everyone()
        return result

    def checkpoint():
        save_checkpoint(accelerator, output_dir, state.step, config_yaml, keep=config.keep_checkpoints)

    model.train()  # from_pretrained leaves the backbone in eval mode: dropout views need train mode
    last_eval: dict = {}
    interrupted = None
    progress = _progress(accelerator, total_steps, state.step)
    items_per_step = config.batch_size * world
    window_start, window_items, window_loss = time.perf_counter(), 0, []
    with GracefulStop() as stop:
        while state.step < total_steps:
            stream = BatchStream(make_items, objective.collate, batch_size=config.batch_size,
                                 rank=accelerator.process_index, world_size=world, seed=config.seed,
                                 epoch=state.epoch, skip_batches=state.batches_in_epoch)
            took_any = False
            for batch in make_loader(stream, config.data.num_workers):
                took_any = True
                loss = _micro_step(accelerator, model, optimizer, scheduler, objective, batch, encode, config, state)
                state.batches_in_epoch += 1
                state.micro_steps += 1
                window_items += items_per_step
                if loss is not None:
                    window_loss.append(loss)
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                progress.update(1)
                if state.step % config.log_every == 0 or state.step == total_steps:
                    elapsed = time.perf_counter() - window_start
                    stats = {"loss": _mean_over_processes(accelerator, window_loss),
                             "lr": scheduler.get_last_lr()[0], "sentences_per_s": window_items / elapsed}
                    accelerator.log(stats, step=state.step)
                    progress.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.2e}",
                                         sent_s=f"{stats['sentences_per_s']:.1f}")
                    window_start, window_items, window_loss = time.perf_counter(), 0, []
                if config.eval.every and state.step % config.eval.every == 0 and state.step < total_steps:
                    last_eval = evaluate_and_export(final=False)
                if config.save_every and state.step % config.save_every == 0:
                    checkpoint()
                interrupted = _any_process_stopping(accelerator, stop)
                if interrupted or state.step >= total_steps:
                    break
            if interrupted:
                break
            if not took_any and state.batches_in_epoch == 0:
                raise ValueError(f"the data gave no complete batch of {items_per_step} items; "
                                 "lower batch_size or check data.corpus")
            if state.step < total_steps:
                state.epoch += 1
                state.batches_in_epoch = 0
    progress.close()

    if interrupted:
        checkpoint()
        accelerator.print(f"stopped by {interrupted} at step {state.step}; checkpoint saved. "
                          f"Continue with: resume=latest output_dir={output_dir}")
        accelerator.end_training()
        return TrainResult(state.step, None, None, last_eval, interrupted)

    last_eval = evaluate_and_export(final=True)
    if config.save_every:
        checkpoint()
    final_dir = output_dir / "final"
    if accelerator.is_main_process:
        export(accelerator.unwrap_model(model), final_dir,
                       metadata={"step": state.step, "eval": _jsonable(last_eval), "config": to_dict(config)})
        accelerator.print(f"exported {final_dir}" + (f"; best step {state.best_step} -> {output_dir / 'best'}"
                                                      if state.best_step is not None else ""))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    best_dir = output_dir / "best" if state.best_step is not None else None
    return TrainResult(state.step, final_dir, best_dir, last_eval)


def _micro_step(accelerator, model, optimizer, scheduler, objective, batch, encode, config: TrainConfig,
                state: TrainState) -> float | None:
    inputs = {k: batch[k].to(accelerator.device) for k in MODEL_INPUTS if k in batch}
    with accelerator.accumulate(model):
        if config.grad_cache_chunk:
            loss = grad_cache_step(
                encode, inputs, lambda emb: objective.loss(emb, batch), config.grad_cache_chunk,
                backward=lambda emb, grad: accelerator.backward(emb, gradient=grad),
                no_sync=lambda: accelerator.no_sync(model))
        else:
            if hasattr(objective, "model_loss"):
                with accelerator.autocast():
                    loss = objective.model_loss(model, inputs, batch)
            else:
                loss = objective.loss(encode(**inputs), batch)
            if torch.isfinite(loss):
                accelerator.backward(loss)
        finite = bool(torch.isfinite(loss))
        grad_norm = None
        if accelerator.sync_gradients and finite:
            # With clipping off (max_grad_norm=0) the norm is still taken (an infinite bound clips
            # nothing): it is how a NaN or inf gradient behind a finite loss is caught.
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm or math.inf)
        if finite and grad_norm is not None and accelerator.scaler is None:
            # With fp16 loss scaling, inf gradients are routine while the scale settles: the
            # scaler skips that optimizer step and lowers the scale; they are not a fault.
            finite = bool(torch.isfinite(grad_norm))
        finite = _all_processes(accelerator, finite)
        if not finite:
            where = f"step {state.step + 1} (micro-batch {state.micro_steps + 1}, epoch {state.epoch})"
            if config.on_nan == "stop":
                raise NonFiniteLossError(
                    f"non-finite loss or gradient at {where}: stopping; the last checkpoint "
                    f"in {config.output_dir}/checkpoints is intact (set on_nan=skip to skip such steps, "
                    "or lower lr / raise loss.temperature)")
            logger.warning("non-finite loss or gradient at %s: step skipped", where)
            state.skipped_steps += 1
            optimizer.zero_grad(set_to_none=True)
            return None
        optimizer.step()
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients and hasattr(objective, "after_optimizer_step"):
            objective.after_optimizer_step(model)
    return float(loss.detach())


def _mean_over_processes(accelerator, losses: list[float]) -> float:
    """The window's mean loss over every process: each holds its share of the global batch's loss
    (see :func:`luse.distributed.global_mean_share`), so rank 0's own value alone is not the loss."""
    local = sum(losses) / max(len(losses), 1)
    if accelerator.num_processes == 1:
        return local
    return float(accelerator.reduce(torch.tensor([local], device=accelerator.device), reduction="mean").item())


def _all_processes(accelerator, flag: bool) -> bool:
    if accelerator.num_processes == 1:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(tensor, reduction="sum").item() == accelerator.num_processes)


def _any_process_stopping(accelerator, stop: GracefulStop) -> str | None:
    if accelerator.num_processes == 1:
        return stop.signal_name
    stopping = not _all_processes(accelerator, stop.signal_name is None)
    return (stop.signal_name or "SIGTERM") if stopping else None


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


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)
