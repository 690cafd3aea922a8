"""How fast the main job's default settings train, against earlier defaults, on this machine in one run.

Issue 15 asks that steps per second at the default settings not drop by more than 10% when the defaults change
for quality. Each row runs ``recipes/pretrain_luse.py`` as a user runs it (People's Daily, the recipe's
default corpus) with the overrides that restore that row's defaults, for ``--steps`` steps, no evaluation or
checkpoint; rows take turns (``--rounds`` rounds of every row, in order) so drifting load falls on all of them,
and each row's figure is its median over rounds. A step is one optimizer step of that row's own batch, so
rows with different batches differ in sentences per step: the table gives both steps/s and sentences/s
(sentences before views: what a step consumes of the corpus).

Run::

    python benchmarks/default_speed.py                        # every row, 3 rounds of 30 steps
    python benchmarks/default_speed.py --rows today filed --rounds 1 --steps 5    # smoke run

Results: ``benchmarks/results/default_speed.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import common
from common import ROOT
from domains import LUSE_ROWS

#: name -> (what it is, overrides that restore it over today's pretrain_luse.yaml): domains.py's rows.
ROWS = {
    "filed": ("defaults when issue 15 was filed: 4 EDA + 4 dropout views of 16 sentences, pooler, no anchor",
              LUSE_ROWS["luse_pretrain_v0"][1]),
    "cls_anchor100": ("session 7's defaults: 2 views of 64 sentences, CLS, anchor 100", LUSE_ROWS["luse_pretrain_v1"][1]),
    "today": ("today's pretrain_luse.yaml", LUSE_ROWS["luse_pretrain"][1]),
    "anchor_every_sentence": ("today's with the anchor over all 64 sentences of a step (session 9's defaults)",
                              ["loss.anchor_sentences=0"]),
    "no_anchor": ("today's without the anchor (what the anchor costs)", ["loss.anchor_weight=0"]),
}


def sentences_per_step(overrides: list[str]) -> int:
    """Corpus sentences one step consumes (before views) under the recipe's yaml and ``overrides``."""
    from luse.config import load_config

    return load_config(ROOT / "recipes" / "configs" / "pretrain_luse.yaml", overrides).batch_size


def run_row(overrides: list[str], steps: int, out: Path, threads: int | None) -> float:
    """Seconds of the training loop (``train_seconds`` of the export) for ``steps`` steps."""
    command = [sys.executable, str(ROOT / "recipes" / "pretrain_luse.py"), f"max_steps={steps}",
               f"output_dir={out}", "eval.every=0", "save_every=0", *overrides]
    if threads:
        command.append(f"threads={threads}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = out.with_suffix(".log")
    with open(log, "w", encoding="utf-8") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{tail}")
    info = json.loads((out / "final" / "luse.json").read_text(encoding="utf-8"))
    return float(info.get("metadata", info)["train_seconds"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="threads= for every row (default: the recipe's)")
    parser.add_argument("--no-save", dest="save", action="store_false")
    args = parser.parse_args(argv)

    machine, started = common.machine_info(), time.strftime("%Y-%m-%d %H:%M")
    seconds: dict[str, list[float]] = {row: [] for row in args.rows}
    with tempfile.TemporaryDirectory(prefix="luse-speed-") as work:
        for round_ in range(args.rounds):
            for row in args.rows:
                took = run_row(ROWS[row][1], args.steps, Path(work) / f"{row}-{round_}", args.threads)
                seconds[row].append(took)
                print(f"round {round_ + 1}/{args.rounds} {row}: {took:.1f} s for {args.steps} steps", flush=True)
    load_after = common.load_average()

    rows, reference = {}, args.rows[0]
    for row in args.rows:
        per_step = statistics.median(seconds[row]) / args.steps
        rows[row] = {"what": ROWS[row][0], "overrides": ROWS[row][1], "seconds": seconds[row],
                     "steps_per_s": 1 / per_step, "sentences_per_s": sentences_per_step(ROWS[row][1]) / per_step}
    table = common.markdown_table(
        ["row", "what", "steps/s", f"vs {reference}", "sentences/s", f"vs {reference}"],
        [[row, r["what"], f"{r['steps_per_s']:.3f}", f"{r['steps_per_s'] / rows[reference]['steps_per_s']:.2f}x",
          f"{r['sentences_per_s']:.1f}", f"{r['sentences_per_s'] / rows[reference]['sentences_per_s']:.2f}x"]
         for row, r in rows.items()])
    note = common.load_note(machine["load_average"], machine["cores"], load_after)
    markdown = "\n\n".join(part for part in [
        f"# pretrain_luse's default settings: training speed ({started})",
        f"`{common.command_line(argv)}`",
        f"Each row: `recipes/pretrain_luse.py max_steps={args.steps} eval.every=0 save_every=0` plus its overrides, "
        f"on People's Daily (the recipe's default corpus); the median of {args.rounds} rounds, rows taking turns. "
        "Loop seconds only (the export's `train_seconds`, which includes the first step's warm-up).",
        table, note, common.machine_markdown(machine, common.versions())] if part)
    data = {"machine": machine, "steps": args.steps, "rounds": args.rounds, "rows": rows,
            "command": common.command_line(argv)}
    common.publish("default_speed", markdown, data, save=args.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
