"""Fixed-step screens: is a candidate setting better than the default at the same number of steps?

``domains.py`` gives every row the steps that fit in the peer's time; choosing a default is cheaper and less
noisy at *equal steps*: train ``recipes/pretrain_luse.py`` on one domain's corpus for exactly ``--steps`` steps
with the candidate's overrides, and score the export (and, with ``--save-every``, each checkpoint: the curve) on
the domain's dev split, read as ``domains.py`` reads it (plain transformers, the pooling the export declares).
The rules and results of the screens are in ``results/domains_selection.md``; this script only measures.

``--corpus own`` trains on the scored split's own texts instead of the domain's corpus: the regime of SOHU
and of a small domain file (a few thousand texts, each seen many times in the budget).
``--split test`` scores the test split, for domains without a dev split (SOHU): those scores are reports, never
choices.

Run (two single-thread screens can share a 2-core machine)::

    python benchmarks/screen.py --domain stsb-zh --steps 303 --tag dropout03 model.dropout=0.3 threads=1
    python benchmarks/screen.py --domain stsb-zh --steps 606 --tag default --corpus own --save-every 50

Each screen prints one JSON line and appends it to ``--results`` (a JSONL file) when given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import common
import domains as bench


def corpus_texts(domain: bench.Domain, which: str, split: str) -> list[str]:
    """The domain's corpus, or (``own``) the distinct texts of the split that is scored."""
    if which == "full":
        return domain.corpus
    return bench.distinct(scored_pairs(domain, split))


def scored_pairs(domain: bench.Domain, split: str):
    pairs = domain.dev if split == "dev" else domain.test
    if pairs is None:
        raise SystemExit(f"{domain.name} has no {split} split; use --split test (a report, not a choice)")
    return pairs


def screen(domain: bench.Domain, steps: int, overrides: list[str], work: Path, *, corpus: str = "full",
           split: str = "dev", save_every: int = 0, recipe: str = "pretrain_luse") -> dict:
    """Train ``steps`` steps and score the export (and each checkpoint) on ``split``."""
    folder = work / domain.name
    folder.mkdir(parents=True, exist_ok=True)
    corpus_file = folder / f"corpus-{corpus}-{split}.txt"
    texts = corpus_texts(domain, corpus, split)
    corpus_file.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    pairs = scored_pairs(domain, split)
    # The scored split goes in score_dir's dev slot, whichever it is (and no second split is read).
    scored = bench.Domain(domain.name, domain.base, texts, dev=pairs, test=None)
    out = Path(tempfile.mkdtemp(prefix="run-", dir=folder)) / "run"
    run = bench.run_luse(recipe, overrides, corpus_file, domain.base, steps, out, save_every=save_every)

    def score(model_dir: Path) -> dict:
        return bench.score_dir(model_dir, scored)["dev"]

    result = {"domain": domain.name, "steps": steps, "corpus": corpus, "corpus_texts": len(texts), "split": split,
              "overrides": overrides, "train_seconds": run["train_seconds"], "command": run["command"],
              "export": run["export"].name, "score": score(run["export"])}
    curve = []
    for checkpoint in sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1])):
        model_dir = bench.checkpoint_as_model(checkpoint, run["export"])
        curve.append([int(checkpoint.name.split("-")[1]), score(model_dir)])
        shutil.rmtree(model_dir)
    if save_every:
        result["curve"] = curve
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True, choices=["stsb-zh", "stsb-en", "sohu-dd", "sohu-dc"])
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--tag", default="", help="a name for the candidate, kept in the result line")
    parser.add_argument("--corpus", choices=["full", "own"], default="full")
    parser.add_argument("--split", choices=["dev", "test"], default="dev")
    parser.add_argument("--save-every", type=int, default=0, help="score a checkpoint every K steps (the curve)")
    parser.add_argument("--data-dir", type=Path, default=bench.DATA_DIR)
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temp dir, removed)")
    parser.add_argument("--results", type=Path, default=None, help="append the result line to this JSONL file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="the candidate's recipe overrides")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    domain = bench.load_domains([args.domain], args.data_dir, None)[0]
    work = args.work or Path(tempfile.mkdtemp(prefix="luse-screen-"))
    started = time.strftime("%Y-%m-%d %H:%M")
    try:
        result = screen(domain, args.steps, list(args.overrides), work, corpus=args.corpus, split=args.split,
                        save_every=args.save_every)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {"tag": args.tag, "started": started, **result, "machine": common.machine_info()}
    line = json.dumps(result, ensure_ascii=False)
    print(line)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
