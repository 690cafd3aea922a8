"""Quality: Spearman x100 on STS files of encoders trained the same way by luse and by sentence-transformers.

Every trained row starts from the same base model, reads the same unlabelled sentences and runs the
same number of optimizer steps with the same batch size (sentences per step), learning rate,
schedule (linear, 10% warm-up), temperature (0.05, i.e. sentence-transformers' ``scale=20``),
gradient clipping (1.0), maximum length and pooling. Each row is then scored on every STS file by
``luse.eval.sts.evaluate_sts`` (cosine Spearman x100), raw and BERT-whitened, with the same
evaluation maximum length (64 tokens) and the pooling it was trained with.

Rows (``--rows``):

``base``          the base model, untrained.
``simcse_unsup``  luse ``recipes/simcse_unsup.py``: 2 dropout views, SimCSE loss.
``simcse_unsup_mlp`` the same with SimCSE's train-only MLP over [CLS] (``model.mlp=true``, its reference
                 code's ``--mlp_only_train``), dropped at export.
``luse_dropout``  luse ``recipes/pretrain_luse.py``: 2 dropout views (``views.dropout=1``), LUSE loss.
``luse_eda``      luse ``recipes/pretrain_luse.py`` with ``views.eda=4 views.dropout=4`` (9 encodings per
                  sentence). Same compute as the 2-view rows: the batch is ``round(2 B / 9)`` sentences
                  (14 for B=64: 126 encodings per step against 128), unless ``--eda-batch-size`` says otherwise.
``luse_eda_cilin`` the same with synonyms from the Cilin thesaurus only (no word-vector neighbours).
``luse_dropout8`` the EDA rows' control: 8 dropout views, no EDA (9 encodings per sentence, the same batch).
``*_each``        the row without the suffix with ``loss.positives=each`` (a softmax per positive).
``*_queue``       the row above it plus a momentum queue of 256 keys (``loss.queue_size=256 loss.momentum=0.995``).
``st_simcse``     the peer: sentence-transformers' unsupervised SimCSE: ``SentenceTransformer(Transformer(base),
                  Pooling(P))`` + ``MultipleNegativesRankingLoss(scale=20)`` on ``(s, s)`` pairs, trained by
                  its own ``SentenceTransformerTrainer`` (AdamW, linear schedule, the same warm-up steps).

The luse rows run the real recipe scripts (``recipes/*.py``) in subprocesses, with key=value
overrides, into temporary output directories; their ``final/`` export is what gets scored.
Pooling is ``cls`` by default for every row (``--pooling mean`` for mean pooling): BERT's
``pooler`` (luse's recipe default) has no plain sentence-transformers equivalent to train the peer with.

Corpus (``--corpus``): ``.txt`` files are one sentence per line; pair files (``.tsv``, ``.csv``,
``.jsonl``, read by ``luse.data.sts.read_sts``) give both sentences of every pair, labels unused.
Sentences are de-duplicated in first-seen order. Defaults: STS-B-zh ``train.tsv`` + ``valid.tsv`` as the
corpus and ``test.tsv`` as the STS file, from ``/work/shared/data/stsb-zh/`` (``--data-dir`` moves it).

Run::

    python benchmarks/quality.py --quick                     # smoke run: 5 steps, tiny data (a few minutes)
    python benchmarks/quality.py                             # 100 steps x 64 sentences, lr 3e-5, every row
    python benchmarks/quality.py --rows base st_simcse --steps 200 --sts a.tsv b.jsonl

Results: ``benchmarks/results/quality.md``, ``.json`` and ``quality.png`` (when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import common
from common import RESULTS_DIR, ROOT

ROWS = ("base", "simcse_unsup", "simcse_unsup_mlp", "simcse_unsup_queue", "luse_dropout", "luse_dropout_queue", "luse_dropout8",
        "luse_dropout8_each", "luse_eda", "luse_eda_each", "luse_eda_cilin", "st_simcse")
TITLES = {
    "base": "base model, untrained",
    "simcse_unsup": "luse SimCSE-unsup (2 dropout views)",
    "simcse_unsup_mlp": "luse SimCSE-unsup + train-only MLP (SimCSE's mlp_only_train)",
    "simcse_unsup_queue": "luse SimCSE-unsup + momentum queue (256 keys, momentum 0.995)",
    "luse_dropout": "luse LUSE, dropout views only (2 views)",
    "luse_dropout_queue": "luse LUSE, dropout views + momentum queue (256 keys, momentum 0.995)",
    "luse_dropout8": "luse LUSE, 8 dropout views (9 views, no EDA)",
    "luse_dropout8_each": "luse LUSE, 8 dropout views, positives=each (9 views, no EDA)",
    "luse_eda_each": "luse LUSE, 4 EDA + 4 dropout views, positives=each (9 views)",
    "luse_eda": "luse LUSE, 4 EDA + 4 dropout views (9 views)",
    "luse_eda_cilin": "luse LUSE, 4 EDA + 4 dropout views, Cilin synonyms only (9 views)",
    "st_simcse": "sentence-transformers SimCSE-unsup (MNRL on (s, s))",
}
QUEUE = ["loss.queue_size=256", "loss.momentum=0.995"]  # MoCo-style negatives: 4x the default batch
#: The luse rows: recipe script and the overrides that make the row.
LUSE_ROWS = {
    "simcse_unsup": ("simcse_unsup", ["loss.name=simcse_unsup", "views.dropout=1", "views.eda=0"]),
    # The SimCSE reference's unsupervised setting: an MLP over [CLS] in training only, dropped at export.
    "simcse_unsup_mlp": ("simcse_unsup", ["loss.name=simcse_unsup", "views.dropout=1", "views.eda=0",
                                          "model.mlp=true"]),
    "simcse_unsup_queue": ("simcse_unsup", ["loss.name=simcse_unsup", "views.dropout=1", "views.eda=0",
                                            *QUEUE]),
    "luse_dropout": ("pretrain_luse", ["loss.name=luse", "views.dropout=1", "views.eda=0"]),
    "luse_dropout_queue": ("pretrain_luse", ["loss.name=luse", "views.dropout=1", "views.eda=0", *QUEUE]),
    # The control of the EDA rows: as many views, all from dropout. The seed's shared target, said
    # explicitly since the recipe's default is positives=each.
    "luse_dropout8": ("pretrain_luse", ["loss.name=luse", "views.dropout=8", "views.eda=0", "loss.positives=share"]),
    "luse_eda": ("pretrain_luse", ["loss.name=luse", "views.dropout=4", "views.eda=4", "loss.positives=share"]),
    # The same two with a softmax per positive (loss.positives=each): positives do not compete.
    "luse_dropout8_each": ("pretrain_luse", ["loss.name=luse", "views.dropout=8", "views.eda=0",
                                             "loss.positives=each"]),
    "luse_eda_each": ("pretrain_luse", ["loss.name=luse", "views.dropout=4", "views.eda=4", "loss.positives=each"]),
    # The same with true synonyms only (a cache of the Cilin thesaurus, no word-vector neighbours).
    "luse_eda_cilin": ("pretrain_luse", ["loss.name=luse", "views.dropout=4", "views.eda=4", "loss.positives=share"]),
}
TEMPERATURE = 0.05
WARMUP_RATIO = 0.1
EVAL_MAX_LENGTH = 64
DATA_DIR = ROOT.parent / "shared" / "data" / "stsb-zh"  # ../shared/data beside the checkout
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="m3e-small", help="base model (default: m3e-small)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR,
                        help=f"where the default corpus and STS files live (default: {DATA_DIR})")
    parser.add_argument("--corpus", nargs="+", type=Path, help="unlabelled sentences: .txt lines or pair files "
                        "(labels unused); default: DATA_DIR/train.tsv DATA_DIR/valid.tsv")
    parser.add_argument("--sts", nargs="+", type=Path, help="STS files to score; default: DATA_DIR/test.tsv")
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS), help="rows to run (default: all)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per trained row (default: 100)")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per step (default: 64)")
    parser.add_argument("--eda-batch-size", type=int, default=None,
                        help="sentences per step of luse_eda (default: round(2 x batch / 9), the same encodings)")
    parser.add_argument("--lr", type=float, default=3e-5, help="learning rate (default: 3e-5)")
    parser.add_argument("--max-length", type=int, default=32, help="training max tokens (default: 32)")
    parser.add_argument("--pooling", choices=("cls", "mean"), default="cls", help="pooling of every row (default: cls)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--corpus-limit", type=int, default=None, help="use only the first N corpus sentences")
    parser.add_argument("--sts-limit", type=int, default=None, help="score only the first N pairs of each STS file")
    parser.add_argument("--keep", type=Path, default=None, help="keep the trained models under this folder")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5 steps, batch 8, 200 corpus sentences, 100 pairs per STS file")
    parser.add_argument("--no-save", action="store_true", help="print the table, write no results files")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size = min(args.steps, 5), min(args.batch_size, 8)
        args.corpus_limit = min(args.corpus_limit or 200, 200)
        args.sts_limit = min(args.sts_limit or 100, 100)
    args.corpus = args.corpus or [args.data_dir / "train.tsv", args.data_dir / "valid.tsv"]
    args.sts = args.sts or [args.data_dir / "test.tsv"]
    args.eda_batch_size = args.eda_batch_size or max(2, round(2 * args.batch_size / 9))
    if min(args.steps, args.batch_size, args.max_length) < 1:
        parser.error("--steps, --batch-size and --max-length must be positive")
    return args


# --- data ----------------------------------------------------------------------------------------

def read_corpus(paths: Sequence[Path], limit: int | None = None) -> list[str]:
    """Distinct sentences of the corpus files, in first-seen order (pair files: both sides, labels unused)."""
    from luse.data.sts import read_sts
    from luse.errors import InputError

    sentences: dict[str, None] = {}
    for path in paths:
        if path.suffix == ".txt":
            texts = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        else:
            pairs = read_sts(path)
            texts = (s.strip() for pair in zip(pairs.sentences1, pairs.sentences2) for s in pair)
        sentences.update(dict.fromkeys(t for t in texts if t))
    if len(sentences) < 2:
        raise InputError(", ".join(map(str, paths)), "at least two distinct sentences", got=f"{len(sentences)}")
    return list(sentences)[:limit]


def read_sts_sets(paths: Sequence[Path], limit: int | None):
    from luse.data.sts import StsSet, read_sts

    sets = []
    for path in paths:
        full = read_sts(path)
        name = path.name if len({p.name for p in paths}) == len(paths) else str(path)
        sets.append(StsSet(name, full.sentences1[:limit], full.sentences2[:limit], full.scores[:limit]))
    return sets


# --- the rows ------------------------------------------------------------------------------------

def warmup_steps(steps: int) -> int:
    """luse's warm-up (``int(warmup_ratio * steps)``), given to the peer as a step count too."""
    return int(WARMUP_RATIO * steps)


def nine_views(row: str) -> bool:
    """Rows with 8 views per sentence: they take ``--eda-batch-size`` sentences per step."""
    return row in LUSE_ROWS and "views.dropout=8" in LUSE_ROWS[row][1] or row.startswith("luse_eda")


def train_luse(row: str, args: argparse.Namespace, corpus: Path, out: Path, log: Path) -> dict:
    """Run one luse recipe in a subprocess; returns the training command, time and exit status."""
    recipe, overrides = LUSE_ROWS[row]
    batch = args.eda_batch_size if nine_views(row) else args.batch_size
    if row == "luse_eda_cilin":
        from luse.augment.synonyms.build import main as build_cache

        cache = out.parent / "cilin.lsc"
        if not cache.exists():
            build_cache(["--vectors", "none", "--thesaurus", "default", "--out", str(cache)])
        overrides = [*overrides, f"views.synonym_cache={cache}"]
    overrides = [
        f"output_dir={out}", f"max_steps={args.steps}", f"batch_size={batch}", f"lr={args.lr}", f"seed={args.seed}",
        f"warmup_ratio={WARMUP_RATIO}", "scheduler=linear", "weight_decay=0.0", "max_grad_norm=1.0",
        f"model.name_or_path={args.model}", f"model.pooling={args.pooling}", f"model.max_length={args.max_length}",
        "model.mlp=false", f"loss.temperature={TEMPERATURE}",
        # The corpus is already one distinct sentence per line: read it as it is, like the peer does.
        f"data.corpus=[{corpus}]", "data.split_sentences=false", "data.min_chars=1", "data.max_chars=100000",
        "data.dedup=false", "data.num_workers=0",
        # No evaluation inside the run (this script scores the export), no TensorBoard.
        "eval.every=0", "eval.sts=[]", "eval.label_free_sentences=1", "save_every=0", "report_to=none",
        *overrides,
    ]
    command = [sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *overrides]
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                              env={**os.environ, **OFFLINE})
    seconds = time.perf_counter() - started
    shown = ["python", f"recipes/{recipe}.py", *(o.replace(str(out), "OUT").replace(str(corpus), "CORPUS.txt")
                                                   for o in overrides)]
    return {"command": shlex.join(shown), "train_seconds": round(seconds, 1), "batch_size": batch,
            "views": 9 if nine_views(row) else 2, "returncode": done.returncode, "model_dir": out / "final"}


def train_peer(args: argparse.Namespace, sentences: list[str], out: Path, log: Path):
    """sentence-transformers' unsupervised SimCSE with its own trainer; returns (model, info)."""
    import logging

    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    from luse.io import resolve_model

    transformer = Transformer(resolve_model(args.model), max_seq_length=args.max_length)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=args.pooling)
    model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    dataset = Dataset.from_dict({"anchor": sentences, "positive": sentences})
    loss = MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE)
    training = SentenceTransformerTrainingArguments(
        output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=warmup_steps(args.steps),
        weight_decay=0.0, max_grad_norm=1.0, seed=args.seed, data_seed=args.seed, save_strategy="no",
        report_to="none", logging_steps=max(1, args.steps // 10), dataloader_drop_last=True, use_cpu=True,
        disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=training, train_dataset=dataset, loss=loss)
    handler = logging.FileHandler(log, encoding="utf-8")
    logging.getLogger("transformers").addHandler(handler)
    started = time.perf_counter()
    try:
        trainer.train()
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    seconds = time.perf_counter() - started
    description = (f"SentenceTransformer(Transformer({args.model}, max_seq_length={args.max_length}), "
                   f"Pooling('{args.pooling}')) + MultipleNegativesRankingLoss(scale={1 / TEMPERATURE:g}) on "
                   f"(s, s) pairs, SentenceTransformerTrainer(max_steps={args.steps}, batch={args.batch_size}, "
                   f"lr={args.lr:g}, linear, warmup_steps={warmup_steps(args.steps)}, max_grad_norm=1.0)")
    return model, {"command": description, "train_seconds": round(seconds, 1), "batch_size": args.batch_size,
                   "views": 2, "returncode": 0}


class PeerEncoder:
    """A sentence-transformers model behind the ``encode`` that ``evaluate_sts`` calls."""

    def __init__(self, model, pooling: str):
        self.model, self.pooling = model, pooling
        model.max_seq_length = EVAL_MAX_LENGTH  # the same evaluation length as the luse rows
        model.eval()

    def encode(self, texts, batch_size: int = 64, pooling: str | None = None, show_progress: bool = False):
        return self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                 show_progress_bar=show_progress)


def score(encoder, sts_sets, pooling: str) -> dict[str, dict[str, float | None]]:
    """``{file: {"raw": x, "whiten": y}}`` Spearman x100 (None where undefined)."""
    from luse.eval.sts import evaluate_sts

    results = evaluate_sts(encoder, sts_sets, poolings=[pooling], whitening=(False, True), batch_size=64)
    return {name: {"raw": _clean(row[pooling]), "whiten": _clean(row[f"{pooling}+whiten"])}
            for name, row in results.items()}


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def run_row(row: str, args: argparse.Namespace, sentences: list[str], corpus: Path, sts_sets, work: Path) -> dict:
    from luse.model.encoder import SentenceEncoder
    from luse.model.export import load_encoder

    out, log = work / row, work / f"{row}.log"
    print(f"=== {row}: {TITLES[row]}", flush=True)
    if row == "base":
        info = {"command": f"SentenceEncoder.from_pretrained({args.model!r}, pooling={args.pooling!r})",
                "train_seconds": 0.0, "batch_size": None, "views": None, "returncode": 0}
        encoder = SentenceEncoder.from_pretrained(args.model, pooling=args.pooling, max_length=EVAL_MAX_LENGTH)
    elif row == "st_simcse":
        model, info = train_peer(args, sentences, out, log)
        encoder = PeerEncoder(model, args.pooling)
    else:
        info = train_luse(row, args, corpus, out, log)
        if info["returncode"] != 0:
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
            return {"row": row, "title": TITLES[row], **_public(info), "error": f"exit {info['returncode']}",
                    "scores": {}}
        encoder = load_encoder(info["model_dir"], pooling=args.pooling, max_length=EVAL_MAX_LENGTH)
    started = time.perf_counter()
    scores = score(encoder.eval() if hasattr(encoder, "eval") else encoder, sts_sets, args.pooling)
    result = {"row": row, "title": TITLES[row], **_public(info), "eval_seconds": round(time.perf_counter() - started, 1),
              "scores": scores}
    print(f"    {scores}", flush=True)
    return result


def _public(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "model_dir"}


# --- report --------------------------------------------------------------------------------------

def render(data: dict, note: str, plot_note: str) -> str:
    files = data["sts_files"]
    header = ["row", "trained", "sentences/step x views"]
    for name in files:
        header += [f"{name}", f"{name} +whiten"]
    header.append("train wall s")
    body = []
    base = next((r for r in data["rows"] if r["row"] == "base" and r["scores"]), None)
    for r in data["rows"]:
        cells = [r["title"], "no" if r["row"] == "base" else f"{data['steps']} steps",
                 "" if r["batch_size"] is None else f"{r['batch_size']} x {r['views']}"]
        for name in files:
            for kind in ("raw", "whiten"):
                value = r["scores"].get(name, {}).get(kind)
                cell = "failed" if "error" in r else "n/a" if value is None else f"{value:.2f}"
                if base and value is not None and r is not base:
                    below = value < base["scores"][name][kind]
                    cell += " (below base)" if below else ""
                cells.append(cell)
        cells.append(f"{r['train_seconds']:.0f}")
        body.append(cells)
    table = common.markdown_table(header, body, align="lll" + "r" * (2 * len(files) + 1))
    commands = "\n".join(f"- `{r['row']}`: `{r['command']}`" for r in data["rows"])
    quick = ("**Smoke run (`--quick`)**: a handful of steps on a few sentences and pairs, to prove the harness "
             "works; the scores are not a quality measurement.") if data["quick"] else ""
    return "\n\n".join(filter(None, [
        "# Quality: Spearman x100 on STS, luse against sentence-transformers",
        quick,
        f"Base model {data['model']}, pooling `{data['pooling']}` for every row (trained and scored). Corpus: "
        f"{data['corpus_sentences']} distinct sentences of {', '.join(data['corpus_files'])} (labels unused). "
        f"Every trained row: {data['steps']} optimizer steps, lr {data['lr']:g}, linear schedule with "
        f"{data['warmup_steps']} warm-up steps, temperature {TEMPERATURE} (scale {1 / TEMPERATURE:g}), clipping 1.0, "
        f"max length {data['max_length']} tokens, seed {data['seed']}; the 2-view rows take {data['batch_size']} "
        f"sentences per step, the 9-view rows {data['eda_batch_size']} sentences x 9 views (about the same encodings "
        "per step). Scores: cosine Spearman x100 per STS file "
        f"({', '.join(f'{k}: {v} pairs' for k, v in data['sts_pairs'].items())}), raw and BERT-whitened (fitted on "
        f"the file's own sentences), evaluation max length {EVAL_MAX_LENGTH}.",
        table,
        "train wall s: for the luse rows the whole recipe process (Python start-up, model load, training, export), "
        "for the peer `trainer.train()` alone, so it is no speed comparison: step times of both, measured side by "
        "side, are in `benchmarks/results/throughput.md`. \"below base\" marks a score under the untrained model's.",
        "Commands per row (OUT = a temporary output directory, CORPUS.txt = the de-duplicated corpus):\n\n" + commands,
        plot_note,
        note,
        common.machine_markdown(data["machine"], data["versions"]),
        f"Command: `{data['command']}`",
    ]))


def plot(data: dict, path: Path) -> str:
    """A grouped bar chart of the raw scores; returns a note for the markdown."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "No plot: matplotlib is not installed in this environment (`pip install matplotlib` to get quality.png)."
    from luse.io import atomic_open

    rows = [r for r in data["rows"] if r["scores"]]
    files = data["sts_files"]
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(rows) * len(files), 4))
    width = 0.8 / max(len(rows), 1)
    scores = []
    for i, r in enumerate(rows):
        values = [r["scores"][f]["raw"] or 0 for f in files]
        scores += values
        bars = ax.bar([x + i * width for x in range(len(files))], values, width, label=r["row"])
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    # The rows differ by tenths of a point: a zero-based axis would hide every difference.
    ax.set_ylim(min(scores) - 2, max(scores) + 1)
    ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(files))], files)
    ax.set_ylabel("Spearman x100 (axis not from 0)")
    ax.set_title(f"{data['model']}, {data['steps']} steps, pooling {data['pooling']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return f"Plot: `{path.relative_to(ROOT).as_posix()}` (raw scores)."


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    machine = common.machine_info()
    sentences = read_corpus(args.corpus, args.corpus_limit)
    sts_sets = read_sts_sets(args.sts, args.sts_limit)
    with tempfile.TemporaryDirectory(prefix="luse-quality-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / "corpus.txt"
        corpus.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        rows = [run_row(row, args, sentences, corpus, sts_sets, work) for row in args.rows]
    data = {
        "machine": machine,
        "versions": common.versions(("luse", "torch", "transformers", "accelerate", "sentence-transformers", "datasets")),
        "command": common.command_line(), "quick": args.quick, "model": args.model, "pooling": args.pooling,
        "corpus_files": [str(p) for p in args.corpus], "corpus_sentences": len(sentences),
        "sts_files": [s.name for s in sts_sets], "sts_pairs": {s.name: len(s) for s in sts_sets},
        "steps": args.steps, "batch_size": args.batch_size, "eda_batch_size": args.eda_batch_size, "lr": args.lr,
        "warmup_steps": warmup_steps(args.steps), "max_length": args.max_length, "seed": args.seed, "rows": rows,
    }
    # Every row carries the machine, versions and command, so a row copied elsewhere keeps them.
    for row in rows:
        row.update(machine=machine["cpu"], versions=data["versions"], harness_command=data["command"])
    plot_note = "" if args.no_save else plot(data, RESULTS_DIR / "quality.png")
    markdown = render(data, common.load_note(machine["load_average"], machine["cores"]), plot_note)
    print(markdown)
    if not args.no_save:
        for path in common.save_results("quality", markdown, data):
            print(f"wrote {path}")
    failed = [r["row"] for r in rows if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
