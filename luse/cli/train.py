"""``luse train RECIPE [key=value ...]``: a recipe launched through accelerate, with its exit code.

The same run as ``accelerate launch recipes/RECIPE.py key=value ...``, with every launcher value passed
explicitly (so accelerate prints no "values were not passed" warning) and the recipe's own exit code
returned (0, 2 for bad input, 130 / 143 after a signal) instead of the launcher's traceback.

One process runs as accelerate's simple launcher would run it (its command and environment), but waited for
here: SIGINT / SIGTERM to ``luse train`` are passed on to the training process alone, which saves a checkpoint
and exits, however long the save takes (accelerate's launcher kills the process tree a few seconds after a
signal: ``_terminate_process_tree``). Several processes go through accelerate's launcher (torchrun's agent
waits its own shutdown timeout); ``benchmarks/results/faults.md`` has the stop sweep under both.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
from pathlib import Path

from luse.cli.args import positive_int


def register(subparsers) -> None:
    """Add ``luse train`` (light imports only: accelerate loads in the handler)."""
    parser = subparsers.add_parser(
        "train", help="run a training recipe (pretrain_luse, simcse_unsup, ...) under accelerate",
        description="Launch recipes/RECIPE.py through accelerate with key=value overrides, exactly as "
                    "`accelerate launch recipes/RECIPE.py key=value ...` does, and exit with the recipe's "
                    "exit code. Options of luse train come before RECIPE.")
    parser.add_argument("recipe", metavar="RECIPE",
                        help="a recipe name (pretrain_luse, simcse_unsup, simcse_sup, cosent, roformer_sim, "
                             "distill, cross_encoder) or the path of a recipe script")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                        help="config overrides, and --config FILE, passed to the recipe")
    parser.add_argument("--num-processes", type=positive_int, default=1, metavar="N",
                        help="training processes on this machine (default 1; with N > 1 they share the global "
                             "batch: GPUs when there are, else CPU processes with gloo)")
    parser.set_defaults(handler=run)


def find_recipe(recipe: str) -> Path:
    """A recipe script: ``recipe`` itself when it is a file, else ``recipes/RECIPE.py`` in the working
    directory or in the checkout luse is installed from."""
    path = Path(recipe)
    if path.suffix == ".py" or os.sep in recipe:
        if path.is_file():
            return path
        raise FileNotFoundError(f"{recipe}: no such recipe script")
    checkout = Path(__file__).resolve().parents[2]
    for folder in (Path.cwd() / "recipes", checkout / "recipes"):
        if (folder / f"{recipe}.py").is_file():
            return folder / f"{recipe}.py"
    known = sorted(p.stem for p in (checkout / "recipes").glob("*.py")) if (checkout / "recipes").is_dir() else []
    raise FileNotFoundError(f"no recipe {recipe!r} in ./recipes or {checkout / 'recipes'}"
                            + (f"; known: {', '.join(known)}" if known else "; give the path of a recipe script"))


def launch_arguments(script: Path, overrides: list[str], processes: int, cuda_devices: int) -> list[str]:
    """``accelerate launch`` arguments with every value it would otherwise default (and warn about).

    ``--mixed_precision no`` is only the launcher's environment default: the recipe's Accelerator
    sets the run's precision from its config (``mixed_precision``)."""
    device = []
    if processes > 1:
        device = ["--multi_gpu"]  # also several CPU processes without a GPU: the trainer picks gloo
    elif not cuda_devices:
        device = ["--cpu"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return ["--num_processes", str(processes), "--num_machines", "1", *device, "--mixed_precision", "no",
            "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(max(1, cores // processes)),
            str(script), *overrides]


def run(args: argparse.Namespace) -> int:
    """Handler of ``luse train``; returns the recipe's exit code."""
    import torch
    from accelerate.commands.launch import launch_command, launch_command_parser

    script = find_recipe(args.recipe)
    argv = launch_arguments(script, args.overrides, args.num_processes, torch.cuda.device_count())
    launch_args = launch_command_parser().parse_args(argv)
    if args.num_processes == 1:
        return run_one_process(launch_args)
    # torchrun's agent logs each rank's exit ("failed (exitcode: 2) local_rank: 0 ..."); the recipe has
    # printed its own line and its exit code is returned below.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        launch_command(launch_args)
    except subprocess.CalledProcessError as failed:  # one process: the recipe already printed its error line
        return failed.returncode
    except Exception as failed:  # several processes: torch's ChildFailedError names each rank's exit code
        first = getattr(failed, "get_first_failure", None)
        if first is None:
            raise
        return first()[1].exitcode
    return 0


def run_one_process(launch_args: argparse.Namespace) -> int:
    """The recipe as accelerate's simple launcher runs it, with stop signals passed on and no time limit."""
    from accelerate.commands.launch import _validate_launch_command
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    validated = _validate_launch_command(launch_args)  # (args, defaults, ...) in recent releases
    launch_args = validated[0] if isinstance(validated, tuple) else validated
    cmd, env = prepare_simple_launcher_cmd_env(launch_args)
    process = subprocess.Popen(cmd, env=env)

    def pass_on(signum, frame):  # the training process saves, then exits 130 / 143
        if process.poll() is None:
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
        return 128 - code if code < 0 else code  # killed by signal N: the shell's 128 + N
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
