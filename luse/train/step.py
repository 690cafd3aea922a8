"""One micro-batch of training: the function :func:`luse.train.train` runs, and the one the throughput
benchmark times (``benchmarks/throughput.py``), so what it reports is the speed of ``train``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from luse.objectives.base import MODEL_INPUTS, Hooks
from luse.train.gradcache import grad_cache_step


class NonFiniteLossError(RuntimeError):
    """Raised (with on_nan=stop) when a loss or gradient is NaN or infinite."""


def train_step(accelerator, model, optimizer, scheduler, objective: Hooks, batch: dict, *,
               grad_cache_chunk: int = 0, max_grad_norm: float = 1.0,
               mark: Callable[[str], None] | None = None) -> float | None:
    """Forward, loss and backward on ``batch``; on the last micro-batch of an accumulation also
    clipping, the optimizer and scheduler steps and the objective's ``after_optimizer_step``.

    ``model`` and ``optimizer`` come from ``accelerator.prepare``; the encoder runs under its autocast
    (bf16 where the run's mixed precision says so). ``grad_cache_chunk > 0`` runs GradCache with
    chunks of that many rows. ``max_grad_norm`` 0 or less clips nothing (the norm is still taken: it
    is how a NaN gradient behind a finite loss is caught).

    Returns the micro-batch's loss, or None when the loss or a gradient is not finite on any
    process: then nothing is updated and the gradients are dropped; the caller decides whether that
    stops the run. ``mark(phase)``, when given, is called as each phase ends (``forward``,
    ``backward`` or ``forward+backward`` under GradCache, ``optimizer``): a benchmark's timer.
    """
    def encode(**inputs):
        with accelerator.autocast():
            return model(**inputs)

    inputs = {k: batch[k].to(accelerator.device) for k in MODEL_INPUTS if k in batch}
    with accelerator.accumulate(model):
        if grad_cache_chunk:
            loss = grad_cache_step(
                encode, inputs, lambda emb: objective.loss(emb, batch), grad_cache_chunk,
                backward=lambda emb, grad: accelerator.backward(emb, gradient=grad),
                no_sync=lambda: accelerator.no_sync(model))
            _mark(mark, "forward+backward")
        else:
            if objective.model_loss is not None:
                with accelerator.autocast():
                    loss = objective.model_loss(model, inputs, batch)
            else:
                loss = objective.loss(encode(**inputs), batch)
            _mark(mark, "forward")
            if torch.isfinite(loss):
                accelerator.backward(loss)
            _mark(mark, "backward")
        finite = bool(torch.isfinite(loss))
        grad_norm = None
        if accelerator.sync_gradients and finite:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(),
                                                    max_grad_norm if max_grad_norm > 0 else math.inf)
        if finite and grad_norm is not None and accelerator.scaler is None:
            # With fp16 loss scaling, inf gradients are routine while the scale settles: the
            # scaler skips that optimizer step and lowers the scale; they are not a fault.
            finite = bool(torch.isfinite(grad_norm))
        if not all_processes(accelerator, finite):
            optimizer.zero_grad(set_to_none=True)
            return None
        optimizer.step()
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients and objective.after_optimizer_step is not None:
            objective.after_optimizer_step(model)
        _mark(mark, "optimizer")
    return float(loss.detach())


def all_processes(accelerator, flag: bool) -> bool:
    """True when ``flag`` is true on every process (one all-reduce with several)."""
    if accelerator.num_processes == 1:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(tensor, reduction="sum").item() == accelerator.num_processes)


def _mark(mark: Callable[[str], None] | None, phase: str) -> None:
    if mark is not None:
        mark(phase)
