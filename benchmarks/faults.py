"""Fault sweep: SIGKILL a tiny training run, a synonym-cache build and an export at random moments.

Training: a tiny-model CPU run (``tests/fault_script.py train``: a checkpoint every step, an
evaluation with a best-model export every few steps) is killed with SIGKILL at random moments,
``--kills`` times, and resumed each time with ``resume=latest`` until it finishes. Its final
weights must be bitwise identical to an uninterrupted run with the same seed. After every kill,
every complete ``checkpoints/step-N`` must load (weights, optimizer, RNG and train state, config),
the exports present must load, and a half-written save may leave only hidden ``.step-N.tmp``
leftovers, which the resumed run must ignore (it resumes from the newest complete step) and clean.
Which phase each kill hit comes from the child's ``PHASE`` lines and from what it left on disk.

Synonym cache and export: the child rewrites an existing cache file (``luse.augment.synonyms.build``) or
export directory (``luse.model.export.export_encoder``) in a loop and is killed at a random moment;
the file or directory must still load and hold exactly the old content. The cache child writes
its file through a slow disk (every write call waits 0.1 s): the file write of a small cache
takes about a millisecond, and kills would otherwise only ever hit the computation before it.

Stops: an endless run with a DataLoader worker under ``accelerate launch`` and under ``luse train``, on one
process and on two, gets SIGTERM or SIGINT at the launcher, at its process group or at the training process;
it must save a checkpoint, say so, and exit 130 / 143 without a traceback.

Two processes: ``accelerate launch --multi_gpu --num_processes 2`` (CPU, gloo) with gathered
negatives must log the same loss at every step as one process on the same global batch, and a
two-process run resumed from a middle checkpoint must end bitwise identical.

``--fuzz N`` also runs ``tests/test_fuzz.py`` with N hypothesis examples per reader and reports
the cases tried per reader (every case parsed, skipped-and-counted, or a one-line error).

Results: ``benchmarks/results/faults.md`` and ``faults.json`` (``faults_quick.*`` with ``--quick``).

Run::

    python benchmarks/faults.py                # 10 kills each, a 1000-example fuzz sweep (~10 min)
    python benchmarks/faults.py --quick        # 3 + 2 + 2 kills, 100 examples per reader (make bench, ~5 min)
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = ROOT / "tests" / "fault_script.py"
sys.path[:0] = [str(HERE), str(ROOT), str(ROOT / "tests")]

from common import command_line, machine_info, machine_markdown, markdown_table, save_results, versions  # noqa: E402

#: Files accelerate writes into every checkpoint of a one-process run (the scheduler and the train
#: state are the two registered custom objects), plus our config.yaml.
CHECKPOINT_FILES = ("model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl",
                    "custom_checkpoint_1.pkl", "config.yaml")
CHILD_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


#: Children started by this process: killed (their whole session) when it exits, however it exits.
LIVE: list[subprocess.Popen] = []


@atexit.register
def _kill_children() -> None:
    for process in LIVE:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class Kill:
    """One SIGKILL: when, what the child was doing, what it left, and whether everything still loaded."""

    delay_s: float
    phase: str  # the child's last PHASE line
    left_on_disk: list[str] = field(default_factory=list)  # hidden leftovers of interrupted writes
    resumed_from: str | None = None  # the checkpoint the next run resumed from (training)
    loads: bool = True
    problems: list[str] = field(default_factory=list)


@dataclass
class Child:
    """A fault_script.py run in its own session, its stdout in a file we poll for PHASE lines."""

    args: list[str]
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> Child:
        env = {**os.environ, **CHILD_ENV}
        with open(self.log, "w") as out:
            self.process = subprocess.Popen([sys.executable, str(SCRIPT), *self.args], cwd=ROOT, env=env,
                                            stdout=out, stderr=subprocess.DEVNULL, start_new_session=True)
        LIVE.append(self.process)
        return self

    def phases(self) -> list[tuple[str, float]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "PHASE":
                found.append((" ".join(parts[1:-1]), float(parts[-1])))
        return found

    def wait_for(self, name: str, timeout: float = 300) -> bool:
        """Wait until the child prints ``PHASE name`` (False if it exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p == name for p, _ in self.phases()):
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.01)
        raise TimeoutError(f"{SCRIPT.name} {' '.join(self.args)}: no PHASE {name} after {timeout:.0f} s")

    def kill_after(self, delay: float) -> bool:
        """SIGKILL the whole process group after ``delay`` seconds; False if it finished first."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            time.sleep(0.002)
        if self.process.poll() is not None:
            return False
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return True

    def finish(self, timeout: float = 600) -> None:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        if code != 0:
            raise RuntimeError(f"{SCRIPT.name} {' '.join(self.args)} failed (exit {code}); log:\n"
                               f"{self.log.read_text(errors='replace')[-3000:]}")

    def last_phase(self) -> str:
        phases = self.phases()
        return phases[-1][0] if phases else "before start"


# --- checks ----------------------------------------------------------------------------------

def hidden_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def load_checkpoint(path: Path) -> None:
    """Read every file of a checkpoint as the resume would; raises on anything missing or corrupt."""
    import torch
    import yaml
    from safetensors.torch import load_file

    for name in CHECKPOINT_FILES:
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path.name}/{name} missing")
    load_file(str(path / "model.safetensors"))
    for name in CHECKPOINT_FILES[1:-1]:  # optimizer, RNG states, scheduler, train state
        torch.load(path / name, weights_only=False)
    yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))


def load_export(path: Path) -> dict:
    """The weights of an export directory, after checking its config and metadata parse."""
    from safetensors.torch import load_file

    json.loads((path / "config.json").read_text(encoding="utf-8"))
    json.loads((path / "luse.json").read_text(encoding="utf-8"))
    return load_file(str(path / "model.safetensors"))


def check_run_dir(out: Path) -> list[str]:
    """Problems with a (possibly killed) training output directory: corrupt checkpoints or exports."""
    from luse.train.checkpoint import list_checkpoints

    problems = []
    for checkpoint in list_checkpoints(out):
        try:
            load_checkpoint(checkpoint)
        except Exception as error:  # any failure to load is what we are looking for
            problems.append(f"{checkpoint.name}: {type(error).__name__}: {error}")
    for name in ("best", "final"):
        if (out / name).exists():
            try:
                load_export(out / name)
            except Exception as error:
                problems.append(f"{name}: {type(error).__name__}: {error}")
    return problems


def same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- training --------------------------------------------------------------------------------

def train_args(model: Path, out: Path, steps: int, workers: int, resume: bool = False) -> list[str]:
    return ["train", str(model), str(out), "--steps", str(steps), "--workers", str(workers),
            *(["--resume"] if resume else [])]


def reference_run(model: Path, work: Path, steps: int, workers: int) -> tuple[dict, float]:
    """The uninterrupted run: its final weights and the seconds from ``PHASE start`` to the end."""
    child = Child(train_args(model, work / "straight", steps, workers), work / "straight.log").start()
    child.finish()
    phases = child.phases()
    start = next(t for p, t in phases if p == "start")
    return load_export(work / "straight" / "final"), phases[-1][1] - start


def killed_training(model: Path, work: Path, kills: int, steps: int, workers: int, span: float,
                    rng: random.Random) -> tuple[list[Kill], dict, int]:
    """Kill the run ``kills`` times, resuming with resume=latest each time; finish it; return the kills,
    the final weights and how many runs it took."""
    out = work / "killed"
    done: list[Kill] = []
    runs = 0
    while True:
        runs += 1
        child = Child(train_args(model, out, steps, workers, resume=runs > 1), work / f"run{runs}.log").start()
        killed = False
        if len(done) < kills and child.wait_for("start"):
            # The remaining work shrinks as checkpoints accumulate; spread the kills over it.
            remaining = max(span * (1 - latest_step(out) / steps), 0.2)
            delay = rng.uniform(0, 2 * remaining / (kills - len(done) + 1))
            killed = child.kill_after(delay)
        if done:
            done[-1].resumed_from = resumed_from(child)
        if not killed:
            child.finish()
            break
        kill = Kill(round(delay, 3), child.last_phase())
        kill.left_on_disk = hidden_entries(out / "checkpoints") + hidden_entries(out)
        kill.problems = check_run_dir(out)
        kill.loads = not kill.problems
        done.append(kill)
        print(f"  kill {len(done)}: after {delay:.2f} s in {kill.phase}"
              f"{'; left ' + ', '.join(kill.left_on_disk) if kill.left_on_disk else ''}"
              f"{'; PROBLEMS ' + '; '.join(kill.problems) if kill.problems else ''}", flush=True)
    return done, load_export(out / "final"), runs


def latest_step(out: Path) -> int:
    from luse.train.checkpoint import list_checkpoints

    found = list_checkpoints(out)
    return int(found[-1].name.split("-")[1]) if found else 0


def resumed_from(child: Child) -> str:
    """The checkpoint a resumed child said it loaded (once it has finished or been killed)."""
    child.process.wait()
    for line in child.log.read_text(errors="replace").splitlines():
        if line.startswith("resumed from "):
            return Path(line.split()[2]).name
    return "killed before resuming" if child.process.returncode else "fresh start"


def kill_phase(kill: Kill, before: list[str] = ()) -> str:
    """What the kill interrupted: the child's phase, refined by the leftovers this kill added
    (``before``: what was already there after the previous kill, which a resumed run may not have
    cleaned yet)."""
    new = [name for name in kill.left_on_disk if name not in before]
    if any(name.startswith(".step-") and name.endswith(".tmp") for name in new):
        return "save (checkpoint half-written)"
    if any(name.startswith(".step-") and name.endswith(".old") for name in new):
        return "save (pruning an old checkpoint)"
    if kill.phase == "save":
        return "save (before or after the write)"
    if any(".tmp-" in name or ".old-" in name for name in new):
        return f"{kill.phase} (half-written: temp copy left)"
    return kill.phase


def kill_phases(kills: list[Kill]) -> list[str]:
    """:func:`kill_phase` of each kill of one sequence, each judged against the previous kill's leftovers."""
    return [kill_phase(kill, kills[i - 1].left_on_disk if i else ()) for i, kill in enumerate(kills)]


# --- synonym cache and export ----------------------------------------------------------------

def write_vectors(path: Path, words: int = 3000, dim: int = 32, seed: int = 0) -> Path:
    """A word2vec text file of random vectors over made-up two-character words."""
    import numpy as np

    rng = np.random.default_rng(seed)
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 200)]
    vocab = list(dict.fromkeys(a + b for a in chars for b in chars))[:words]
    vectors = rng.standard_normal((len(vocab), dim)).astype("float32")
    lines = [f"{len(vocab)} {dim}"] + [w + " " + " ".join(f"{x:.5f}" for x in v) for w, v in zip(vocab, vectors)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cache_content(path: Path) -> tuple:
    from luse.augment.synonyms.store import SynonymCache

    with SynonymCache.load(path, verify=True) as cache:
        return list(cache.vocab), cache.neighbour_ids.copy(), cache.scores.copy()


def write_once(kind: str, source: Path, target: Path) -> None:
    """One complete write in this process, as the child does it (its cleanup of leftovers included)."""
    from fault_script import main as child_main

    child_main([kind, str(source), str(target), "--repeat", "1"])


def killed_writes(kind: str, source: Path, target: Path, work: Path, kills: int, rng: random.Random) -> list[Kill]:
    """Rewrite ``target`` in a child and kill it ``kills`` times; the old content must survive each kill."""
    import numpy as np

    from luse.io import cleanup_stale

    def content():
        if kind == "cache":
            return cache_content(target)
        return load_export(target)

    def equal(a, b):
        if kind == "cache":
            return a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
        return same_tensors(a, b)

    write_once(kind, source, target)
    reference = content()
    done = []
    # One write takes a fraction of a second: measure it, then kill within a few writes.
    for number in range(kills):
        slow = ["--slow-write", "0.1"] if kind == "cache" else []  # the file write is ~1 ms otherwise
        child = Child([kind, str(source), str(target), *slow], work / f"{kind}-{number}.log").start()
        if not child.wait_for("write"):
            child.finish()
            raise RuntimeError(f"{kind} child ended before writing")
        child.wait_for("other")
        phases = [(name, at) for name, at in child.phases() if name in ("write", "other")]
        one_write = max(phases[1][1] - phases[0][1], 0.01)
        delay = rng.uniform(0, 3 * one_write)
        child.kill_after(delay)
        kill = Kill(round(delay, 3), child.last_phase(), hidden_entries(target.parent))
        missing = not target.exists()
        if missing:  # killed between an export's two renames: the complete old copy sits aside
            kill.problems.append(f"{target.name} missing until cleanup_stale restored it")
            cleanup_stale(target.parent)
        try:
            kill.loads = equal(content(), reference)
            if not kill.loads:
                kill.problems.append("content changed")
        except Exception as error:
            kill.loads = False
            kill.problems.append(f"{type(error).__name__}: {error}")
        if missing and kill.loads:
            kill.problems = [p + " (restored, identical)" for p in kill.problems]
        done.append(kill)
        print(f"  {kind} kill {number + 1}: after {delay:.3f} s in {kill.phase}"
              f"{'; left ' + ', '.join(kill.left_on_disk) if kill.left_on_disk else ''}"
              f"{'; ' + '; '.join(kill.problems) if kill.problems else ''}", flush=True)
    # A last complete write must clear every leftover of the killed ones.
    write_once(kind, source, target)
    leftovers = hidden_entries(target.parent)
    if leftovers:
        done.append(Kill(0.0, "after a complete write", leftovers, loads=False,
                         problems=[f"leftovers not cleaned: {leftovers}"]))
    return done


# --- two processes ---------------------------------------------------------------------------

def launch_command(processes: int, overrides: dict, front: str = "accelerate") -> list[str]:
    """``accelerate launch recipes/pretrain_luse.py`` (or ``luse train pretrain_luse``) with 1 or 2 CPU processes."""
    import socket

    settings = [f"{key}={value}" for key, value in overrides.items()]
    if front == "luse":
        return [sys.executable, "-m", "luse.cli", "train", "--num-processes", str(processes), "pretrain_luse",
                *settings]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # accelerate starts a single process with --cpu; --multi_gpu starts them all and the
    # trainer picks CPU + gloo when there is no GPU.
    device = ["--multi_gpu"] if processes > 1 else ["--cpu"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), *device,
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), str(ROOT / "recipes" / "pretrain_luse.py"), *settings]


def launch(processes: int, overrides: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """``accelerate launch recipes/pretrain_luse.py`` with 1 or 2 CPU processes (gloo), to the end."""
    env = {**os.environ, **CHILD_ENV, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(launch_command(processes, overrides), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{processes}-process launch failed:\n{done.stderr[-3000:]}")
    return done


def logged_losses(out: Path) -> dict[int, float]:
    """``{step: loss}`` from the run's TensorBoard logs (every event file, resumed runs included)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    losses = {}
    for folder in sorted({p.parent for p in (out / "logs").rglob("events.out.tfevents*")}):
        events = EventAccumulator(str(folder))
        events.Reload()
        if "loss" in events.Tags().get("scalars", []):
            losses.update({event.step: event.value for event in events.Scalars("loss")})
    return losses


def two_processes(work: Path, steps: int = 4) -> dict:
    """Gathered negatives: one process x batch 8 against two processes x batch 4, step by step; then
    the two-process run resumed from its step ``steps // 2`` checkpoint must end bitwise identical."""
    import shutil

    from fault_script import sentences
    from tiny_models import make_tiny_model

    model = make_tiny_model(work / "model-no-dropout", dropout=0.0)  # the two runs must compute the same function
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(sentences(96)) + "\n", encoding="utf-8")
    common = {"model.name_or_path": model, "data.corpus": corpus, "data.min_chars": 2, "max_steps": steps,
              "views.dropout": 1, "views.eda": 0, "eval.every": 0, "save_every": 1, "keep_checkpoints": steps, "log_every": 1,
              "report_to": "tensorboard", "lr": 1e-3, "model.pooling": "mean"}
    one, two = work / "one-process", work / "two-processes"
    launch(1, {**common, "output_dir": one, "batch_size": 8})
    launch(2, {**common, "output_dir": two, "batch_size": 4})
    a, b = logged_losses(one), logged_losses(two)
    if sorted(a) != list(range(1, steps + 1)) or sorted(b) != sorted(a):
        raise RuntimeError(f"missing logged steps: one process {sorted(a)}, two {sorted(b)}")
    straight = load_export(two / "final")
    # Resume: forget everything after the middle checkpoint, then continue with resume=latest.
    middle = steps // 2
    for checkpoint in (two / "checkpoints").iterdir():
        if int(checkpoint.name.split("-")[1]) > middle:
            shutil.rmtree(checkpoint)
    shutil.rmtree(two / "final")
    resumed_run = launch(2, {**common, "output_dir": two, "batch_size": 4, "resume": "latest"})
    resumed = load_export(two / "final")
    return {"steps": steps, "losses_one_process": [a[s] for s in sorted(a)],
            "losses_two_processes": [b[s] for s in sorted(b)],
            "max_abs_loss_difference": max(abs(a[s] - b[s]) for s in a),
            "resumed_from_step": middle, "resume_said": "resumed from" in resumed_run.stdout,
            "resume_identical": same_tensors(straight, resumed),
            "losses_after_resume": [logged_losses(two)[s] for s in range(middle + 1, steps + 1)]}


# --- stop signals under the launchers ------------------------------------------------------------

#: What a stop is sent to: the launcher's pid, the launcher's process group (a terminal's Ctrl-C, a
#: scheduler's or container's stop), or the training process alone (``kill`` of the python running the recipe).
STOP_TARGETS = ("launcher", "group", "training process")


def stop_signal(work: Path, model: Path, corpus: Path, *, front: str, processes: int, target: str, sig: str,
                workers: int = 1, timeout: float = 180) -> dict:
    """Start an endless run (DataLoader workers on) under ``front``'s launcher, send ``sig`` to ``target`` once
    a few steps are done, and report what the user gets: the exit code, the saved checkpoint, the log's lines."""
    import psutil

    from luse.train.signals import EXIT_CODES

    out = work / f"stop-{front}-{processes}-{target.replace(' ', '-')}-{sig}"
    overrides = {"model.name_or_path": model, "data.corpus": f"[{corpus}]", "data.min_chars": 2, "batch_size": 4,
                 "max_steps": 100000, "save_every": 0, "eval.every": 0, "report_to": "none", "views.eda": 0,
                 "views.dropout": 1, "model.pooling": "mean", "data.num_workers": workers, "output_dir": out}
    env = {**os.environ, **CHILD_ENV, "OMP_NUM_THREADS": "1"}
    log = work / f"{out.name}.log"
    with open(log, "w") as sink:
        # A session of its own (its group is what a terminal or scheduler signals) with the default SIGINT
        # action, as under a terminal: a background harness (nohup, CI) would otherwise pass SIG_IGN on.
        process = subprocess.Popen(launch_command(processes, overrides, front), cwd=ROOT, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    LIVE.append(process)
    deadline = time.monotonic() + timeout
    while _progress_steps(log) < 5:  # a few steps in: the workers are up and batches are flowing
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError(f"{out.name}: no training progress; log:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    number = getattr(signal, sig)
    if target == "launcher":
        os.kill(process.pid, number)
    elif target == "group":
        os.killpg(process.pid, number)
    else:
        # The processes that run the recipe, not their DataLoader workers (forked: the same command line).
        running = [p for p in psutil.Process(process.pid).children(recursive=True)
                   if "pretrain_luse.py" in " ".join(p.cmdline())]
        trainers = [p for p in running if p.ppid() not in {q.pid for q in running}]
        for trainer in trainers:
            trainer.send_signal(number)
    sent = time.monotonic()
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        code = None
    text = log.read_text(errors="replace")
    return {"front": front, "processes": processes, "target": target, "signal": sig, "workers": workers,
            "exit_code": code, "expected_exit_code": EXIT_CODES[sig], "seconds_to_exit": round(time.monotonic() - sent, 1),
            "saved_step": latest_step(out) or None, "said_stopped": f"stopped by {sig}" in text,
            "traceback": "Traceback" in text, "worker_killed": "is killed by signal" in text}


def stop_ok(stop: dict) -> bool:
    """Saved, said so, exited as a shell reports the signal, and showed no traceback."""
    return bool(stop["saved_step"] and stop["said_stopped"] and stop["exit_code"] == stop["expected_exit_code"]
                and not stop["traceback"] and not stop["worker_killed"])


def stop_launcher_code(stop: dict) -> bool:
    """The one case the launcher's own code decides: accelerate's simple launcher turns the training process's
    130 / 143 into its exit 1; the checkpoint must still be saved."""
    return bool(stop["front"] == "accelerate" and stop["target"] == "training process" and stop["saved_step"]
                and stop["said_stopped"] and not stop["worker_killed"])


def front_door_errors(work: Path, model: Path) -> list[dict]:
    """What a user sees for bad input (a misspelt key) under each front door: exit code, lines, traceback."""
    overrides = {"model.name_or_path": model, "max_step": 3, "output_dir": work / "bad-input"}
    env = {**os.environ, **CHILD_ENV, "OMP_NUM_THREADS": "1"}
    seen = []
    for front, processes, quiet in (("luse", 1, False), ("accelerate", 1, False), ("accelerate", 1, True),
                                    ("luse", 2, False), ("accelerate", 2, False)):
        command = launch_command(processes, overrides, front)
        if quiet:
            command.insert(command.index("--num_processes"), "-q")
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        lines = [line for line in (done.stdout + done.stderr).splitlines()
                 if line.strip() and "Loading weights" not in line]
        seen.append({"command": ("luse train" if front == "luse" else "accelerate launch" + (" -q" if quiet else ""))
                     + (f", {processes} processes" if processes > 1 else ""), "exit_code": done.returncode,
                     "lines": len(lines), "traceback": "Traceback" in done.stderr,
                     "error_line": next((line for line in lines if "error:" in line), "")})
    return seen


def _progress_steps(log: Path) -> int:
    """The step count of the last progress bar update in a run's log (0 before the first)."""
    import re

    found = re.findall(r"train:[^|\n]*\|[^|\n]*\| (\d+)/\d+ \[", log.read_text(errors="replace")) if log.exists() else []
    return int(found[-1]) if found else 0


def stop_sweep(work: Path) -> list[dict]:
    """Every stop a user or a scheduler sends, under both front doors, on one process and on two."""
    from fault_script import sentences
    from tiny_models import make_tiny_model

    model = make_tiny_model(work / "model-stop")
    corpus = work / "stop-corpus.txt"
    corpus.write_text("\n".join(sentences(400)) + "\n", encoding="utf-8")
    cases = [(front, 1, target, sig) for front in ("accelerate", "luse") for target in STOP_TARGETS
             for sig in ("SIGTERM", "SIGINT") if not (target == "launcher" and sig == "SIGINT")]
    cases += [(front, 2, target, "SIGTERM") for front in ("accelerate", "luse") for target in ("launcher", "group")]
    return [stop_signal(work, model, corpus, front=front, processes=n, target=target, sig=sig)
            for front, n, target, sig in cases]


# --- fuzzing ---------------------------------------------------------------------------------

def fuzz(examples: int, work: Path) -> dict:
    """Run tests/test_fuzz.py with ``examples`` hypothesis examples per reader; its per-reader counts."""
    report = work / "fuzz.json"
    env = {**os.environ, **CHILD_ENV, "LUSE_FUZZ_EXAMPLES": str(examples), "LUSE_FUZZ_REPORT": str(report)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_fuzz.py")], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    counts = json.loads(report.read_text()) if report.exists() else {}
    return {"passed": done.returncode == 0, "seconds": round(time.perf_counter() - started, 1),
            "readers": counts, "pytest_tail": done.stdout[-2000:]}


# --- report ----------------------------------------------------------------------------------

def summarise_kills(kills: list[Kill]) -> dict:
    phases: dict[str, int] = {}
    for name in kill_phases(kills):
        phases[name] = phases.get(name, 0) + 1
    return {"kills": len(kills), "all_loaded": sum(k.loads for k in kills), "phases": phases}


def markdown(results: dict) -> str:
    train = results["training"]
    lines = ["# Fault sweep: kills, resumes, fuzzed input", "",
             f"Command: `{results['command']}`", "",
             machine_markdown(results["machine"], results["versions"]), "", "## SIGKILL during training", "",
             f"Tiny BERT (2 layers, hidden 32), {train['steps']} steps of batch 8 x 3 views on CPU, a checkpoint "
             f"every step (keep 2), evaluation + best export every 3 steps, "
             f"data.num_workers={train['workers']}. The uninterrupted run took {train['span_s']:.1f} s "
             "from start-up to the end; each kill came at a random moment of the remaining work.", "",
             f"**{train['survived']} of {train['kills_tried']} kills survived with bitwise identical final "
             f"weights** ({train['runs']} runs in all; identical: {train['identical']}); "
             f"every complete checkpoint and export loaded after every kill: {train['all_loaded']}.", ""]
    kills = [Kill(**k) for k in train["kills"]]
    rows = [(i + 1, k.delay_s, phase, ", ".join(k.left_on_disk) or "-", k.resumed_from or "-",
             "yes" if k.loads else "NO: " + "; ".join(k.problems))
            for i, (k, phase) in enumerate(zip(kills, kill_phases(kills)))]
    lines += [markdown_table(["kill", "after (s)", "phase hit", "left on disk", "next run resumed from",
                              "checkpoints + exports load"], rows, "rrllll"), ""]
    for kind, title in (("cache", "the synonym cache (luse.augment.synonyms.build)"),
                        ("export", "an export (luse.model.export.export_encoder)")):
        part = results[kind]
        lines += [f"## SIGKILL while rewriting {title}", "",
                  f"**{part['intact']} of {part['tried']} kills left the old {kind} loadable and identical**; "
                  f"phases: {part['summary']['phases']}."
                  + (" The child writes the file through a slow disk (0.1 s per write call; `file` phase), "
                     "so that kills land in the write itself, not only in the neighbour search before it."
                     if kind == "cache" else ""), ""]
        kills = [Kill(**k) for k in part["kills"]]
        rows = [(i + 1, k.delay_s, phase, ", ".join(k.left_on_disk) or "-", "yes" if k.loads else "NO",
                 "; ".join(k.problems) or "-") for i, (k, phase) in enumerate(zip(kills, kill_phases(kills)))]
        lines += [markdown_table(["kill", "after (s)", "phase", "left on disk", "old content intact", "note"],
                                 rows, "rrllll"), ""]
    pair = results["two_processes"]
    rows = [(step, f"{a:.6f}", f"{b:.6f}", f"{abs(a - b):.1e}") for step, (a, b)
            in enumerate(zip(pair["losses_one_process"], pair["losses_two_processes"]), 1)]
    lines += ["## Two processes with gathered negatives", "",
              "`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo), 2 x 4 sentences, against one process "
              "x 8 sentences, tiny BERT without dropout, loss logged every step (mean over processes):", "",
              markdown_table(["step", "loss, 1 process", "loss, 2 processes", "difference"], rows, "rrrr"), "",
              f"**2-process equivalence error: {pair['max_abs_loss_difference']:.1e}** (largest loss difference). "
              f"Two-process run resumed from its step-{pair['resumed_from_step']} checkpoint: final weights "
              f"{'bitwise identical' if pair['resume_identical'] else 'DIFFERENT'} to the uninterrupted run.", ""]
    if results.get("stops"):
        rows = [(f"`{'luse train' if stop['front'] == 'luse' else 'accelerate launch'}`", stop["processes"],
                 stop["target"], stop["signal"], stop["saved_step"] or "NONE",
                 f"{stop['exit_code']}" + ("" if stop["exit_code"] == stop["expected_exit_code"] else
                                           f" (training process: {stop['expected_exit_code']})"),
                 stop["seconds_to_exit"], "yes" if stop["traceback"] else "no")
                for stop in results["stops"]]
        lines += ["## Stop signals under the launchers, DataLoader workers on", "",
                  "An endless run (tiny BERT, `data.num_workers=1`, no periodic saves) started in a session of its "
                  "own, signalled a few steps in: at the launcher's pid, at its process group (what a terminal's "
                  "Ctrl-C, `scancel` or a container stop reach) or at the training process alone.", "",
                  markdown_table(["front door", "processes", "sent to", "signal", "checkpoint saved at step",
                                  "exit code", "seconds to exit", "traceback"], rows,
                                 "lrllrrrl"), "",
                  f"**{sum(stop_ok(stop) for stop in results['stops'])} of {len(results['stops'])} saved a "
                  "checkpoint and exited 130 / 143 with no traceback.** A signal to the training process alone "
                  "under `accelerate launch` also saves, but accelerate's launcher reports the process's 143 as "
                  "a failure (exit 1 and its `CalledProcessError` traceback; `-q` drops the traceback); `luse "
                  "train` returns the training process's code.", ""]
    if results.get("front_door_errors"):
        rows = [(f"`{seen['command']}`", seen["exit_code"], seen["lines"], "yes" if seen["traceback"] else "no")
                for seen in results["front_door_errors"]]
        lines += ["## Bad input under each front door", "",
                  "A misspelt key (`max_step=3`): what the terminal shows (lines other than the weight-loading bar).",
                  "", markdown_table(["command", "exit code", "lines shown", "traceback"], rows, "lrrl"), "",
                  f"The error line: `{results['front_door_errors'][0]['error_line']}`", ""]
    if results.get("fuzz"):
        fz = results["fuzz"]
        lines += ["## Fuzzed readers (hypothesis)", "",
                  f"`tests/test_fuzz.py` with {fz['examples']} examples per reader: "
                  f"{'all passed (zero unhandled exceptions, hangs or partial outputs)' if fz['passed'] else 'FAILED'}"
                  f" in {fz['seconds']} s.", ""]
        rows = [(name, c.get("cases", 0), c.get("parsed", 0), c.get("skipped", 0), c.get("error", 0))
                for name, c in sorted(fz["readers"].items())]
        lines += [markdown_table(["reader", "cases", "parsed", "parsed with skips counted", "one-line error"],
                                 rows, "lrrrr"), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 training kills, 2 each for cache and export, "
                        "100 fuzz examples per reader")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--write-kills", type=int, default=10, help="kills each for the cache and the export")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the training run")
    parser.add_argument("--fuzz", type=int, default=1000, help="hypothesis examples per reader (0: no fuzzing)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.kills, args.write_kills, args.steps, args.fuzz = 3, 2, 12, 100
    rng = random.Random(args.seed)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # atexit still runs
    from tiny_models import make_tiny_model

    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="luse-faults-") as tmp:
        work = Path(tmp)
        model = make_tiny_model(work / "model")
        print(f"training: uninterrupted reference run ({args.steps} steps)", flush=True)
        reference, span = reference_run(model, work, args.steps, args.workers)
        print(f"  {span:.1f} s; now {args.kills} kills", flush=True)
        kills, final, runs = killed_training(model, work, args.kills, args.steps, args.workers, span, rng)
        identical = same_tensors(reference, final)
        leftovers = hidden_entries(work / "killed" / "checkpoints") + hidden_entries(work / "killed")
        summary = summarise_kills(kills)
        training = {"steps": args.steps, "workers": args.workers, "span_s": round(span, 2), "runs": runs,
                    "kills_tried": len(kills), "identical": identical,
                    "survived": len(kills) if identical and summary["all_loaded"] == len(kills) else 0,
                    "all_loaded": summary["all_loaded"] == len(kills), "phases": summary["phases"],
                    "leftovers_at_end": leftovers, "kills": [asdict(k) for k in kills]}
        print(f"  final weights identical: {identical}; leftovers at the end: {leftovers or 'none'}", flush=True)
        parts = {}
        vectors = write_vectors(work / "vectors.txt")
        for kind, source, target in (("cache", vectors, work / "cache" / "synonyms.lsc"),
                                     ("export", model, work / "exports" / "model")):
            print(f"{kind}: {args.write_kills} kills while rewriting", flush=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            done = killed_writes(kind, source, target, work, args.write_kills, rng)
            parts[kind] = {"tried": len(done), "intact": sum(k.loads for k in done),
                           "summary": summarise_kills(done), "kills": [asdict(k) for k in done]}
        print("two processes: loss curve against one process, then a resume", flush=True)
        pair = two_processes(work / "two", steps=4)
        print(f"  max |loss difference| {pair['max_abs_loss_difference']:.2e}; "
              f"resume identical: {pair['resume_identical']}", flush=True)
        print("stops: SIGTERM / SIGINT to the launcher, its process group or the training process", flush=True)
        stops = stop_sweep(work / "stops")
        errors = front_door_errors(work, model)
        print(f"  {sum(stop_ok(stop) for stop in stops)} of {len(stops)} saved and exited as promised", flush=True)
        fuzzed = None
        if args.fuzz:
            print(f"fuzz: {args.fuzz} examples per reader", flush=True)
            fuzzed = {"examples": args.fuzz, **fuzz(args.fuzz, work)}
            print(f"  passed: {fuzzed['passed']} in {fuzzed['seconds']} s", flush=True)
    results = {"command": command_line(argv), "machine": machine, "versions": versions(),
               "training": training, **parts, "two_processes": pair, "stops": stops, "front_door_errors": errors, "fuzz": fuzzed}
    # The smoke run keeps its own files, so `make bench` never overwrites the full sweep's figures.
    md, js = save_results("faults_quick" if args.quick else "faults", markdown(results), results)
    print(f"wrote {md.relative_to(ROOT)} and {js.relative_to(ROOT)}")
    ok = (training["survived"] == training["kills_tried"] and not leftovers
          and all(p["intact"] == p["tried"] for p in parts.values()) and (fuzzed is None or fuzzed["passed"])
          and pair["resume_identical"] and pair["max_abs_loss_difference"] < 1e-4
          and all(stop_ok(stop) or stop_launcher_code(stop) for stop in stops))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
