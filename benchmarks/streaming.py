"""Streaming: peak memory while reading 10k to 10M corpus sentences must not grow with the corpus.

For each size a synthetic corpus of distinct short Chinese lines is generated lazily into a
temporary ``.txt`` file (10M lines are about 300 MB; deleted afterwards), then read by a fresh
subprocess, so each peak is the reader's own:

``sentences``  ``luse.data.corpus.sentence_stream`` as the trainer calls it: split, clean,
               de-duplicate (the fixed 128 MiB Bloom filter), shuffle (10k buffer).
``batches``    the same stream cut into batches of 64 by ``luse.data.loader.BatchStream`` through
               ``make_loader`` (a DataLoader, no workers) with a collate that only counts, so the
               batch machinery is measured without tokenisation.

Reported per size and mode: sentences read, seconds, sentences/s, RSS after the imports, peak RSS
(``ru_maxrss``) and the growth between the two. Flat means the peak at 10M is the peak at 10k.

Run::

    python benchmarks/streaming.py --quick              # 10k and 100k (seconds)
    python benchmarks/streaming.py                      # 10k, 100k, 1M, 10M (minutes: reading 10M is CPU-bound)
    python benchmarks/streaming.py --sizes 10k,10m --modes sentences

Results: ``benchmarks/results/streaming.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from common import (
    ROOT,
    command_line,
    load_note,
    machine_info,
    machine_markdown,
    markdown_table,
    publish,
    rss_mib,
    versions,
)

#: Characters of the synthetic lines: common Chinese characters, so splitting and cleaning do real work.
CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你能而子那得里后自之年过"
MODES = ("sentences", "batches")
SUFFIXES = {"k": 1_000, "m": 1_000_000}
BATCH = 64


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = SUFFIXES.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in SUFFIXES else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected sizes like 10k or 10m, got {text!r}")
    return value


def label(size: int) -> str:
    for suffix, scale in (("m", 1_000_000), ("k", 1_000)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{suffix}"
    return str(size)


def synthetic_lines(count: int) -> Iterator[str]:
    """``count`` distinct lines of 6-14 characters, made on the fly (nothing held in memory)."""
    n = len(CHARS)
    for i in range(count):
        a, b, c = CHARS[i % n], CHARS[(i * 7 + 3) % n], CHARS[(i * 13 + 5) % n]
        yield f"{a}{b}{c}第{i}句{c}{a}。\n"


def write_corpus(path: Path, count: int) -> int:
    """Write ``count`` synthetic lines to ``path`` in 1 MiB buffered writes; returns the bytes written."""
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as handle:
        for line in synthetic_lines(count):
            handle.write(line)
    return path.stat().st_size


# --- the child: one size, one mode, a fresh process ------------------------------------------

def child(path: str, mode: str) -> dict:
    from luse.data.corpus import sentence_stream

    def make_items(epoch: int):
        return sentence_stream(path, seed=0, epoch=epoch)

    if mode == "batches":
        from luse.data.loader import BatchStream, make_loader

        stream = BatchStream(make_items, lambda items, rng: {"n": len(items)}, batch_size=BATCH)
        loader = make_loader(stream)
    baseline = rss_mib()
    started = time.perf_counter()
    count = 0
    if mode == "sentences":
        for _ in make_items(0):
            count += 1
    else:
        for batch in loader:
            count += batch["n"]
    seconds = time.perf_counter() - started
    # ru_maxrss is in KiB on Linux: the whole life of this process, imports included.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"read": count, "seconds": round(seconds, 2), "rss_after_imports_mib": round(baseline, 1),
            "peak_rss_mib": round(peak, 1), "growth_mib": round(peak - baseline, 1)}


def measure(path: Path, mode: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", str(path), "--mode", mode], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"streaming: the {mode} reader failed on {path}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [parse_size(x) for x in s.split(",")],
                        default=[10_000, 100_000, 1_000_000, 10_000_000],
                        help="corpus sizes in lines (default: 10k,100k,1m,10m)")
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES),
                        help=f"readers to measure (default: {','.join(MODES)})")
    parser.add_argument("--batches-max", type=parse_size, default=1_000_000,
                        help="measure the batches reader only up to this size (default: 1m; it reads the same "
                             "stream, and 10M twice takes long on a shared CPU)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to write the corpora (default: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="10k and 100k only")
    parser.add_argument("--no-save", action="store_true", help="print the table, write no results files")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode {unknown[0]!r}; expected {', '.join(MODES)}")
    if args.quick:
        args.sizes = [s for s in args.sizes if s <= 100_000] or [10_000]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mode)))
        return 0
    machine = machine_info()
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="luse-streaming-", dir=args.tmp))
    try:
        largest = max(args.sizes)
        needed = largest * 40  # bytes per line, with room to spare
        free = shutil.disk_usage(folder).free
        if free < 2 * needed:
            raise SystemExit(f"streaming: {free / 2**30:.1f} GiB free in {folder}, {needed / 2**30:.1f} GiB needed")
        for size in sorted(args.sizes):
            path = folder / f"corpus-{label(size)}.txt"
            started = time.perf_counter()
            size_bytes = write_corpus(path, size)
            print(f"{label(size)}: wrote {size_bytes / 2**20:.0f} MiB in {time.perf_counter() - started:.1f} s",
                  flush=True)
            for mode in args.modes:
                if mode == "batches" and size > args.batches_max:
                    continue
                row = {"size": size, "mode": mode, "file_mib": round(size_bytes / 2**20, 1), **measure(path, mode)}
                rows.append(row)
                print(f"  {mode}: {row}", flush=True)
            path.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    data = {"machine": machine, "versions": versions(("luse", "numpy", "torch")), "command": command_line(),
            "rows": rows}
    publish("streaming", render(data, load_note(machine["load_average"], machine["cores"])), data,
            save=not args.no_save)
    return 0


def render(data: dict, note: str) -> str:
    rows = data["rows"]
    table = markdown_table(
        ["sentences", "reader", "file (MiB)", "seconds", "sentences/s", "RSS after imports (MiB)",
         "peak RSS (MiB)", "growth (MiB)"],
        [[label(r["size"]), r["mode"], f"{r['file_mib']:.1f}", f"{r['seconds']:.1f}",
          f"{r['read'] / max(r['seconds'], 1e-9):,.0f}", f"{r['rss_after_imports_mib']:.0f}",
          f"{r['peak_rss_mib']:.0f}", f"{r['growth_mib']:.0f}"] for r in rows], align="llrrrrrr")
    verdicts = []
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        if len(mine) >= 2:
            small, big = mine[0], mine[-1]
            verdicts.append(f"`{mode}`: peak RSS {small['peak_rss_mib']:.0f} MiB at {label(small['size'])} and "
                            f"{big['peak_rss_mib']:.0f} MiB at {label(big['size'])} "
                            f"({big['size'] // small['size']:,}x the sentences, "
                            f"{big['peak_rss_mib'] / small['peak_rss_mib']:.2f}x the memory).")
    lost = [r for r in rows if r["read"] < r["size"] * 0.99]
    return "\n\n".join(filter(None, [
        "# Streaming: memory against corpus size",
        "Synthetic corpora of distinct short Chinese lines (one sentence each), generated into a temporary file, "
        "read once by a fresh process per row. `sentences` = `luse.data.corpus.sentence_stream` (split, clean, "
        "Bloom-filter de-duplication with its fixed 2^30 bits = 128 MiB, 10k shuffle buffer); `batches` = the "
        f"same through `BatchStream` + `make_loader` in batches of {BATCH} (collate only counts: no tokenisation). "
        "Peak RSS is the process's `ru_maxrss`, imports included; growth = peak minus the RSS after the imports, "
        "which includes the Bloom filter's pages as they are touched.",
        table,
        " ".join(verdicts),
        ("Rows that read fewer sentences than written: "
         + ", ".join(f"{label(r['size'])} {r['mode']} ({r['read']})" for r in lost)
         + " (Bloom-filter false positives or cleaning).") if lost else "",
        note,
        machine_markdown(data["machine"], data["versions"]),
        f"Command: `{data['command']}`",
    ]))


if __name__ == "__main__":
    raise SystemExit(main())
