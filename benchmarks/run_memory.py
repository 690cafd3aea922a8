"""Peak memory of a training run, the trainer and its data workers together.

Runs ``recipes/RECIPE.py`` on a corpus for ``--steps`` steps and polls the proportional set size (``Pss`` in
``/proc/PID/smaps_rollup``) of the training process and of each of its child processes (the DataLoader
workers) every ``--every`` seconds. Pss splits pages shared after a fork between the processes sharing
them, so the sum is what the run really holds (RSS would count a forked worker's shared pages twice).

``--luse-root DIR`` runs another checkout's recipe and ``luse`` (``git worktree add DIR COMMIT``), to set a
change against the code before it in the same session.

    python benchmarks/run_memory.py [--corpus FILE] --steps 75 --threads 1 [--luse-root DIR] [key=value ...]

Results: ``benchmarks/results/run_memory.{md,json}`` (``--results-name``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import ROOT


def pss_kib(pid: int) -> int:
    """The process's proportional set size, 0 once it has gone."""
    return common.read_proc(f"/proc/{pid}/smaps_rollup").get("Pss", 0)


def children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for task in tasks for c in (task / "children").read_text().split()]
    except (OSError, ValueError):
        return []


def measure(root: Path, recipe: str, overrides: list[str], every: float) -> dict:
    """Peak total Pss over the run, and each process's own peak (MiB), polled every ``every`` seconds."""
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="luse-memory-") as out, \
            open(Path(out) / "run.log", "w", encoding="utf-8") as log:
        command = [sys.executable, str(root / "recipes" / f"{recipe}.py"), f"output_dir={out}/run", *overrides]
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak_total, peaks, started = 0, {}, time.perf_counter()
        while process.poll() is None:
            sizes = {pid: pss_kib(pid) for pid in [process.pid, *children(process.pid)]}
            peak_total = max(peak_total, sum(sizes.values()))
            for pid, kib in sizes.items():
                peaks[pid] = max(peaks.get(pid, 0), kib)
            time.sleep(every)
        if process.returncode != 0:
            tail = (Path(out) / "run.log").read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
            raise SystemExit(f"{recipe} exited {process.returncode}:\n" + "\n".join(tail))
    workers = sorted((kib for pid, kib in peaks.items() if pid != process.pid), reverse=True)
    return {"peak_total_mib": round(peak_total / 1024), "trainer_mib": round(peaks[process.pid] / 1024),
            "worker_processes": len(workers), "largest_worker_mib": round(workers[0] / 1024) if workers else 0,
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="peoples-daily",
                        help="a corpus file (default: the recipes' built-in People's Daily)")
    parser.add_argument("--recipe", default="pretrain_luse")
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--luse-root", type=Path, action="append", default=[],
                        help="also measure this checkout (repeatable); this one is always measured")
    parser.add_argument("--results-name", default="run_memory")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 steps")
    args, overrides = parser.parse_known_args(argv)
    if args.quick:
        args.steps = 10
    corpus = Path(args.corpus).resolve() if Path(args.corpus).exists() else args.corpus  # a file, or an alias
    overrides = [f"data.corpus=[{corpus}]", f"max_steps={args.steps}", f"threads={args.threads}",
                 "save_every=0", *overrides]
    started, machine = time.strftime("%Y-%m-%d %H:%M"), common.machine_info()
    rows = {}
    for root in [*args.luse_root, ROOT]:
        head = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True,
                              text=True).stdout.strip()[:70]
        rows[head] = measure(root.resolve(), args.recipe, overrides, args.every)
        print(head, rows[head], flush=True)
    header = ["code", "peak total MiB", "trainer MiB", "worker processes", "largest worker MiB", "wall s"]
    body = [[k, r["peak_total_mib"], r["trainer_mib"], r["worker_processes"], r["largest_worker_mib"], r["seconds"]]
            for k, r in rows.items()]
    md = "\n".join([f"# Peak memory of a training run ({started})", "",
                    f"`{common.command_line(argv)}`", "",
                    common.markdown_table(header, body), "",
                    "Pss (proportional set size) of the training process and its DataLoader workers, polled every "
                    f"{args.every:g} s; `worker processes`: how many were seen over the run.", "",
                    common.machine_markdown(machine, common.versions()), ""])
    if not args.no_save:
        common.save_results(args.results_name, md, {"date": started, "command": common.command_line(argv),
                                                    "machine": machine, "rows": rows})
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
