"""Shared helpers for the benchmarks: what machine ran them, and where their results go.

Every benchmark writes ``benchmarks/results/NAME.md`` (a human-readable table) and
``benchmarks/results/NAME.json`` (the same numbers for scripts), both atomically, so an
interrupted run never leaves half a results file behind.  Each results file names the machine,
the library versions and the exact command, because a throughput figure means nothing without
them; :func:`machine_info` also records the load average, so figures taken while other jobs shared
the CPU say so.

Memory is read from ``/proc/self/status`` (``VmRSS``, ``VmHWM``) rather than with an extra
package; :func:`reset_peak_rss` clears the high-water mark first, so a peak measured around a
training loop is not the peak of loading the model.

Example (a script in ``benchmarks/`` imports this module as ``common``)::

    from common import machine_info, save_results

    info = machine_info()              # before the timed work: its load average is the other jobs'
    ...
    md_path, json_path = save_results("throughput", markdown_text, {"machine": info, ...})
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

#: Packages whose versions every results file lists.
DEFAULT_PACKAGES = ("luse", "torch", "transformers", "accelerate", "sentence-transformers", "tokenizers")

#: A one-minute load average above this fraction of the cores, before the run starts, means other
#: jobs were competing for the CPU.
BUSY_LOAD_FRACTION = 0.5

if str(ROOT) not in sys.path:  # so `python benchmarks/x.py` can import luse from a plain checkout
    sys.path.insert(0, str(ROOT))

from luse.io import atomic_write_text  # noqa: E402

# --- the machine ------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo``, else whatever :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 minute load averages, or None where the platform has none."""
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return None


def memory_total_gib() -> float | None:
    status = read_proc("/proc/meminfo")
    return round(status["MemTotal"] / 2**20, 1) if "MemTotal" in status else None


def gpu_name() -> str | None:
    """The first CUDA device's name, without initialising CUDA when torch has no GPU build."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def machine_info() -> dict:
    """The machine a benchmark ran on: CPU, usable cores, memory, GPU, OS, Python, load average.

    Call it before the timed work starts: the load average it records is then the other jobs'
    load, which :func:`load_note` turns into a warning for the results file.
    """
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gib": memory_total_gib(),
        "gpu": gpu_name(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": _rounded(load_average()),
    }


def load_note(load_before: Sequence[float] | None, cores: int, load_after: Sequence[float] | None = None) -> str:
    """A sentence for the results file saying whether other jobs shared the CPU.

    ``load_before`` is the load average read before the benchmark started working, so its own
    threads are not counted.  Returns an empty string when the machine looked idle.
    """
    if not load_before:
        return ""
    busy = load_before[0] > BUSY_LOAD_FRACTION * cores
    after = f", {load_after[0]:.2f} after" if load_after else ""
    if not busy:
        return ""
    return (f"Taken under load: the 1-minute load average was {load_before[0]:.2f} on {cores} cores before "
            f"the run{after}, so other jobs shared the CPU and the times are noisy (ratios measured in the same "
            "run are more trustworthy than absolute figures).")


def versions(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (``"not installed"`` for missing ones), plus Python."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that produced a result, as a user would retype it (paths relative to the repo)."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        script = Path(argv[0])
        if script.is_absolute() and ROOT in script.parents:
            argv[0] = str(script.relative_to(ROOT))
    return shlex.join(["python", *argv])


# --- memory -----------------------------------------------------------------------------------

def read_proc(path: str) -> dict[str, int]:
    """``Key: value kB`` lines of a /proc file as ``{key: kibibytes}`` (empty where /proc is absent)."""
    values = {}
    try:
        text = Path(path).read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[key] = int(fields[0])
    return values


def rss_mib() -> float | None:
    """This process's resident set size now, in MiB (None without /proc)."""
    kib = read_proc("/proc/self/status").get("VmRSS")
    return None if kib is None else kib / 1024


def peak_rss_mib() -> float | None:
    """This process's peak resident set size (``VmHWM``) in MiB (None without /proc)."""
    kib = read_proc("/proc/self/status").get("VmHWM")
    return None if kib is None else kib / 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); True when the kernel accepted it.

    Without the reset, the peak of a training loop would be hidden under the peak of loading the
    checkpoint (which briefly holds two copies of the weights).
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


# --- results ----------------------------------------------------------------------------------

def results_paths(name: str, results_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """``(NAME.md, NAME.json)`` in the results directory."""
    return results_dir / f"{name}.md", results_dir / f"{name}.json"


def save_results(name: str, markdown: str, data: Mapping, results_dir: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Write ``NAME.md`` and ``NAME.json`` atomically; returns their paths.

    The JSON is written first, so a reader that finds the markdown of a run also finds its numbers.
    """
    md_path, json_path = results_paths(name, results_dir)
    atomic_write_text(json_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(md_path, markdown if markdown.endswith("\n") else markdown + "\n")
    return md_path, json_path


def publish(name: str, markdown: str, data: Mapping, save: bool = True) -> None:
    """Print a benchmark's markdown and, when ``save``, write ``NAME.md``/``.json`` and say where."""
    print(markdown)
    if save:
        for path in save_results(name, markdown, data):
            print(f"wrote {path}")


def write_word2vec_files(words: Sequence[str], vectors, text: Path, binary: Path) -> None:
    """``words``/``vectors`` as a word2vec text file (six decimals) and a binary one (little-endian float32)."""
    with open(text, "w", encoding="utf-8") as stream, open(binary, "wb") as raw:
        header = f"{len(words)} {vectors.shape[1]}\n"
        stream.write(header)
        raw.write(header.encode())
        for word, row in zip(words, vectors):
            stream.write(word + " " + " ".join(f"{value:.6f}" for value in row.tolist()) + "\n")
            raw.write(word.encode("utf-8") + b" " + row.astype("<f4").tobytes() + b"\n")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one letter per column (``l`` or ``r``, default all left)."""
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} letters for {len(header)} columns")
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(map(str, header)) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def machine_markdown(machine: Mapping, package_versions: Mapping[str, str]) -> str:
    """Two lines for a results file: the machine, then the versions."""
    parts = [f"{machine['cpu']}, {machine['cores']} usable cores"]
    if machine.get("memory_gib"):
        parts.append(f"{machine['memory_gib']} GiB RAM")
    if machine.get("gpu"):
        parts.append(f"GPU {machine['gpu']}")
    parts.append(machine["platform"])
    if machine.get("load_average"):
        parts.append("load average " + " ".join(f"{x:.2f}" for x in machine["load_average"]) + " before the run")
    version_text = ", ".join(f"{k} {v}" for k, v in package_versions.items())
    return f"Machine: {'; '.join(parts)}.\n\nVersions: {version_text}."


def _rounded(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [round(v, 2) for v in values]
