"""Run every benchmark in ``benchmarks/`` one after the other and say where the results went.

Each benchmark is a script in this folder (everything but ``common.py``, this file and names
starting with ``_``) that writes its results under ``benchmarks/results/``.  They run as
subprocesses, one at a time, so each has the machine to itself and a crash in one does not stop
the others; the exit status is non-zero if any of them failed.

With ``--quick`` each one runs its smoke-test version: the script's own ``--quick`` (or
``--smoke`` / ``--small``) flag when its ``--help`` lists one, else the smallest sizes known for
it in :data:`SMALL_ARGS` (only the flags its ``--help`` still lists are passed).  ``make bench``
runs ``python benchmarks/run_all.py --quick``.

Run::

    python benchmarks/run_all.py --quick                 # what `make bench` does
    python benchmarks/run_all.py                         # full versions (can take an hour)
    python benchmarks/run_all.py --quick --only throughput eda_throughput
    python benchmarks/run_all.py --list
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
# Helpers, not benchmarks: they write no results file and need arguments (a corpus, a domain and its steps).
NOT_BENCHMARKS = {"common.py", "run_all.py", "neighbour_views.py", "screen.py"}
QUICK_FLAGS = ("--quick", "--smoke", "--small")

#: The smallest useful sizes of benchmarks that have no quick flag: ``(flag, value)`` pairs.
SMALL_ARGS: dict[str, tuple[tuple[str, str], ...]] = {
    "synonym_cache": (("--sizes", "55k"),),
    "read_vectors": (("--sizes", "55k"),),
}

#: Offline everywhere: the quick runs must work on a machine without the hub.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@dataclass
class Outcome:
    name: str
    command: list[str]
    status: str = "not run"  # ok | failed (exit N) | timed out
    seconds: float = 0.0
    results: list[Path] = field(default_factory=list)
    note: str = ""


def discover(folder: Path = HERE) -> list[Path]:
    """The benchmark scripts in ``folder``, by name."""
    return sorted(p for p in folder.glob("*.py") if p.name not in NOT_BENCHMARKS and not p.name.startswith("_"))


def help_text(script: Path) -> str:
    """The script's ``--help`` output ('' if it cannot even print that)."""
    try:
        done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                              timeout=120, cwd=ROOT, env={**os.environ, **OFFLINE_ENV})
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout if done.returncode == 0 else ""


def lists_flag(help_output: str, flag: str) -> bool:
    """Whether ``flag`` appears as an option in argparse help (not as part of a longer option)."""
    for token in help_output.replace(",", " ").replace("[", " ").replace("]", " ").split():
        if token == flag or token.startswith(flag + "="):
            return True
    return False


def quick_arguments(script: Path) -> tuple[list[str], str]:
    """The arguments that make ``script`` small, and a note on how they were chosen."""
    usage = help_text(script)
    for flag in QUICK_FLAGS:
        if lists_flag(usage, flag):
            return [flag], f"its {flag} flag"
    small = [(flag, value) for flag, value in SMALL_ARGS.get(script.stem, ()) if lists_flag(usage, flag)]
    if small:
        return [part for pair in small for part in pair], "no quick flag: smallest sizes"
    return [], "no quick flag and no known small sizes: full run"


def snapshot() -> dict[Path, int]:
    """``{file: modification time in ns}`` for the results directory (hidden temporary files left out)."""
    if not RESULTS.is_dir():
        return {}
    return {p: p.stat().st_mtime_ns for p in RESULTS.rglob("*") if p.is_file() and not p.name.startswith(".")}


def written_since(before: dict[Path, int]) -> list[Path]:
    """Results files that are new or were rewritten since ``before`` was taken."""
    return sorted(path for path, mtime in snapshot().items() if before.get(path) != mtime)


def run_one(script: Path, quick: bool, timeout: float | None) -> Outcome:
    args, note = quick_arguments(script) if quick else ([], "full version")
    command = [sys.executable, str(script), *args]
    outcome = Outcome(script.stem, command, note=note)
    print(f"\n=== {script.stem}: {' '.join([Path(command[1]).relative_to(ROOT).as_posix(), *command[2:]])} "
          f"({note})", flush=True)
    before, clock = snapshot(), time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, timeout=timeout, env={**os.environ, **OFFLINE_ENV})
    except subprocess.TimeoutExpired:
        outcome.status = f"timed out after {timeout:.0f}s"
    else:
        outcome.status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
    outcome.seconds = time.perf_counter() - clock
    outcome.results = written_since(before)
    return outcome


def summary(outcomes: Sequence[Outcome]) -> str:
    lines = ["", "=== summary"]
    for outcome in outcomes:
        lines.append(f"{outcome.name:<20} {outcome.status:<22} {outcome.seconds:7.1f}s")
        lines += [f"    {path.relative_to(ROOT).as_posix()}" for path in outcome.results]
        if outcome.status == "ok" and not outcome.results:
            lines.append("    (wrote nothing under benchmarks/results)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each benchmark's smoke-test version (make bench)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (script names)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds each benchmark may take (default: 1800 with --quick, else none)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.timeout is None and args.quick:
        args.timeout = 1800.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scripts = discover()
    if args.list:
        print("\n".join(script.stem for script in scripts))
        return 0
    if args.only:
        unknown = sorted(set(args.only) - {s.stem for s in scripts})
        if unknown:
            print(f"run_all: no benchmark named {', '.join(unknown)}; there are: "
                  f"{', '.join(s.stem for s in scripts)}", file=sys.stderr)
            return 2
        scripts = [s for s in scripts if s.stem in args.only]
    if not scripts:
        print(f"run_all: no benchmarks in {HERE}", file=sys.stderr)
        return 2
    outcomes = [run_one(script, args.quick, args.timeout) for script in scripts]
    print(summary(outcomes))
    failed = [o.name for o in outcomes if o.status != "ok"]
    if failed:
        print(f"\nrun_all: {len(failed)} of {len(outcomes)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nall {len(outcomes)} benchmarks passed; results in {RESULTS.relative_to(ROOT).as_posix()}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
