"""Retrieval: recall@10 of approximate faiss search (IVF, HNSW) against exact search, on real sentence vectors.

The corpus is People's Daily 1998 (the built-in ``peoples-daily``, about 43k clean sentences),
encoded with m3e-small through ``luse.eval.retrieval.encode_file`` (the streamed ``luse encode`` path).
The last ``--queries`` sentences are held out as queries; the others are indexed. For each index
kind the benchmark reports build time, search time per query and recall@10: the fraction of the
exact top 10 (``flat``, brute force) that the approximate index also returns, averaged over the
queries. IVF is swept over ``nprobe`` and HNSW over ``efSearch``, with the luse defaults marked.

Run::

    python benchmarks/retrieval.py --quick                  # 2000 sentences, 200 queries: about a minute
    python benchmarks/retrieval.py --limit 10000            # the recorded run on a busy 2-core CPU
    python benchmarks/retrieval.py                          # the whole corpus (encoding takes a while on a CPU)
    python benchmarks/retrieval.py --vectors runs/pd.npy    # keep (and reuse) the encoded vectors

Results: ``benchmarks/results/retrieval.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from common import (
    command_line,
    load_note,
    machine_info,
    machine_markdown,
    markdown_table,
    publish,
    versions,
)

from luse.eval.retrieval import (
    HNSW_EF_SEARCH,
    build_index,
    default_nlist,
    default_nprobe,
    load_vectors,
    search,
)
from luse.io import atomic_write_text

NPROBES = (1, 2, 4, 8, 16, 32, 64, 128)
EF_SEARCHES = (16, 32, 64, 128, 256)
K = 10


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="m3e-small", help="encoder (default: m3e-small)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use the first N sentences of the corpus (default: all, about 43k)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out query sentences (default: 1000)")
    parser.add_argument("--batch-size", type=int, default=128, help="encoding batch size (default: 128)")
    parser.add_argument("--max-length", type=int, default=64, help="encoding max tokens (default: 64)")
    parser.add_argument("--vectors", type=Path, default=None,
                        help="keep the encoded vectors here, and reuse them when the file exists")
    parser.add_argument("--quick", action="store_true", help="2000 sentences, 200 queries (smoke run)")
    parser.add_argument("--no-save", action="store_true", help="print the table, write no results files")
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.queries = min(args.limit or 2000, 2000), min(args.queries, 200)
    return args


def encode_corpus(args: argparse.Namespace, sentences: list[str]) -> tuple[np.ndarray, dict]:
    """The corpus vectors, encoded by the streamed ``luse encode`` path (or reused from ``--vectors``)."""
    from luse.cli.main import load_model
    from luse.eval.retrieval import encode_file

    sidecar = None if args.vectors is None else args.vectors.with_suffix(".json")
    if args.vectors is not None and args.vectors.is_file():
        vectors = load_vectors(args.vectors, mmap=False)
        if len(vectors) == len(sentences):
            # How long the encoding took when these vectors were made, if that run recorded it.
            made = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
            return vectors, {**made, "reused": str(args.vectors)}
        print(f"{args.vectors} holds {len(vectors)} vectors, not {len(sentences)}: encoding again")
    encoder = load_model(args.model, max_length=args.max_length, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        src = Path(folder) / "sentences.txt"
        src.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        out = args.vectors or Path(folder) / "vectors.npy"
        started = time.perf_counter()
        encode_file(encoder, src, out, batch_size=args.batch_size, show_progress=True)
        seconds = time.perf_counter() - started
        vectors = load_vectors(out, mmap=False)
    encoding = {"seconds": round(seconds, 1), "sentences_per_second": round(len(sentences) / seconds, 1),
                "load_average_before": machine_info()["load_average"]}
    if sidecar is not None:
        atomic_write_text(sidecar, json.dumps(encoding) + "\n")
    return vectors, encoding


def timed_search(index, queries: np.ndarray, **params) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    ids = search(index, queries, K, **params)[1]
    return ids, (time.perf_counter() - started) * 1000 / len(queries)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact top k that ``found`` also holds."""
    return float(np.mean([len(set(f[f >= 0]) & set(e)) / len(e) for f, e in zip(found, exact)]))


def measure(corpus: np.ndarray, queries: np.ndarray) -> list[dict]:
    rows = []
    started = time.perf_counter()
    flat = build_index(corpus, "flat", use_gpu=False)
    build = time.perf_counter() - started
    exact, ms = timed_search(flat, queries)
    rows.append({"index": "flat", "params": "exact", "build_s": round(build, 2), "ms_per_query": round(ms, 3),
                 "recall_at_10": 1.0, "default": True})
    nlist = default_nlist(len(corpus))
    started = time.perf_counter()
    ivf = build_index(corpus, "ivf", use_gpu=False)
    build = time.perf_counter() - started
    for nprobe in sorted({*[p for p in NPROBES if p <= nlist], default_nprobe(nlist)}):
        found, ms = timed_search(ivf, queries, nprobe=nprobe)
        rows.append({"index": "ivf", "params": f"nlist={nlist} nprobe={nprobe}", "build_s": round(build, 2),
                     "ms_per_query": round(ms, 3), "recall_at_10": round(recall(found, exact), 4),
                     "default": nprobe == default_nprobe(nlist)})
    started = time.perf_counter()
    hnsw = build_index(corpus, "hnsw", use_gpu=False)
    build = time.perf_counter() - started
    for ef in EF_SEARCHES:
        found, ms = timed_search(hnsw, queries, ef_search=ef)
        rows.append({"index": "hnsw", "params": f"M=32 efSearch={ef}", "build_s": round(build, 2),
                     "ms_per_query": round(ms, 3), "recall_at_10": round(recall(found, exact), 4),
                     "default": ef == HNSW_EF_SEARCH})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from luse.data.corpus import peoples_daily_sentences

    args = parse_args(argv)
    machine = machine_info()
    sentences = peoples_daily_sentences(args.limit)
    if len(sentences) <= args.queries + K:
        raise SystemExit(f"retrieval: {len(sentences)} sentences are too few for {args.queries} queries")
    vectors, encoding = encode_corpus(args, sentences)
    corpus, queries = vectors[:-args.queries], vectors[-args.queries:]
    rows = measure(corpus, queries)
    data = {"machine": machine, "versions": versions(("luse", "torch", "transformers", "faiss-cpu", "numpy")),
            "command": command_line(), "model": args.model, "corpus": "peoples-daily",
            "indexed": len(corpus), "queries": len(queries), "dim": int(vectors.shape[1]), "k": K,
            "encoding": encoding, "rows": rows}
    table = markdown_table(
        ["index", "parameters", "build (s)", "ms / query", "recall@10", "luse default"],
        [[r["index"], r["params"], f"{r['build_s']:.2f}", f"{r['ms_per_query']:.3f}", f"{r['recall_at_10']:.3f}",
          "yes" if r["default"] else ""] for r in rows], align="llrrrl")
    limited = "" if args.limit is None else (
        f" (the first {len(sentences)} sentences of the corpus, `--limit {args.limit}`, less the queries)")
    encoded = (f"encoded in {encoding['seconds']} s ({encoding['sentences_per_second']} sentences/s, CPU, "
               f"through `luse.eval.retrieval.encode_file`)" if "seconds" in encoding else "encoded earlier")
    if "reused" in encoding:
        encoded += f"; vectors reused from `{encoding['reused']}` (`--vectors`)"
    note = load_note(machine["load_average"], machine["cores"])
    markdown = "\n\n".join(filter(None, [
        "# Retrieval: approximate vs exact search",
        f"{len(corpus)} People's Daily sentences{limited} indexed, {len(queries)} held-out sentences as queries, "
        f"{args.model} vectors (its default `pooler` output, dimension {vectors.shape[1]}, L2-normalised, cosine = inner product), {encoded}. "
        "recall@10 = fraction of the exact top 10 (flat) that the approximate index returns. Times: one CPU "
        "search call over all queries, per query; single run.",
        table,
        note,
        machine_markdown(machine, data["versions"]),
        f"Command: `{data['command']}`",
    ]))
    publish("retrieval", markdown, data, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
