"""Crash-safe training checkpoints on top of ``accelerator.save_state``.

A checkpoint is ``OUTPUT/checkpoints/step-00000050/``: accelerate's state (model, optimizer,
RNG of every process, and the registered scheduler and train state, which holds the data
position) plus the resolved config. Every process writes into ``.step-00000050.tmp`` (a name
they all agree on); only when all have finished does the main process rename it into place.
A kill at any moment leaves either no new checkpoint or a complete one; readers ignore
leftover ``.tmp`` directories and the next save clears them. A ``step-N`` name is never deleted in
place either (a kill half-way through ``rmtree`` would leave a partial directory under a valid
name): replaced and pruned checkpoints are first renamed to a hidden ``.step-N.old`` name.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from luse.errors import InputError

logger = logging.getLogger("luse")

STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    """Everything beyond accelerate's own state that resuming needs (registered for checkpointing)."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batches_in_epoch: int = 0  # global batches of the current epoch already consumed
    micro_steps: int = 0  # micro-batches (with gradient accumulation)
    best_score: float | None = None
    best_step: int | None = None
    skipped_steps: int = 0  # non-finite steps skipped with on_nan=skip

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """``latest`` -> newest complete checkpoint (None when there is none yet: a fresh start)."""
    candidates = resume_candidates(resume, output_dir)
    return candidates[0] if candidates else None


def resume_candidates(resume: str | None, output_dir: str | Path) -> list[Path]:
    """What ``resume`` may load, first choice first: ``latest`` -> every complete checkpoint, newest
    first (none yet: a fresh start); a path -> that checkpoint alone."""
    if not resume:
        return []
    if resume == "latest":
        return list_checkpoints(output_dir)[::-1]
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"resume={resume}: no such checkpoint directory")
    return [path]


def check_no_earlier_run(output_dir: str | Path) -> None:
    """Without ``resume``, refuse an ``output_dir`` that holds an earlier run's checkpoints: training
    on would mix two runs (a later ``resume=latest`` would pick up the old run's steps)."""
    found = list_checkpoints(output_dir)
    if found:
        raise InputError(output_dir, "an output_dir without checkpoints (a new run) or resume=latest",
                         got=f"{len(found)} checkpoint(s) of an earlier run, up to {found[-1].name}",
                         hint=f"continue that run with resume=latest, or start over in another output_dir or "
                              f"after deleting {checkpoints_dir(output_dir)}")


def load_resume(accelerator, resume: str | None, output_dir: str | Path) -> Path | None:
    """Restore the state registered with ``accelerator`` from the checkpoint ``resume`` names and
    return it (None: nothing to resume, a fresh start, said in the log).

    With ``latest``, a checkpoint that does not load on every process (a truncated or corrupted
    file) is named in a warning and the next older one is tried: a later successful load replaces
    every part of the state a failed one may have half-restored.

    Raises:
        InputError: no candidate loads (naming the newest and why), or ``resume`` names a
            checkpoint that does not load.
    """
    from luse.train.step import all_processes

    candidates = resume_candidates(resume, output_dir)
    if resume and not candidates:
        logger.info("resume=%s: no checkpoint in %s yet: starting from step 0", resume, checkpoints_dir(output_dir))
    failures: list[tuple[Path, str]] = []
    for candidate in candidates:
        try:
            accelerator.load_state(str(candidate))
            error = None
        except Exception as caught:  # whatever a damaged file raises (SafetensorError, EOFError, pickle, ...)
            error = " ".join(f"{type(caught).__name__}: {caught}".split())[:200]
        if all_processes(accelerator, error is None):
            return candidate
        failures.append((candidate, error or "another process could not load it"))
        if candidate is not candidates[-1]:
            logger.warning("checkpoint %s does not load (%s): resuming from the one before", *failures[-1])
    if failures:
        newest, reason = failures[0]
        raise InputError(newest, "a checkpoint that loads",
                         got=f"{len(failures)} checkpoint(s) that do not load, the newest: {reason}")
    return None


class _SharedTensorNotice(logging.Filter):
    """Drops accelerate's "Removed shared tensor {...} while saving" notice. safetensors stores a tensor
    once; a model with tied weights (RoFormer-Sim's LM head = its input embeddings) has two names for
    it, and the second is left out of the file. ``load_checkpoint`` reads it back with safetensors'
    ``load_model`` into the same model, whose tie restores both names (resume is exact): nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return re.match(r"(\[RANK \d+\] )?Removed shared tensor ", record.getMessage()) is None


@contextlib.contextmanager
def _tied_weights_saved_once():
    """:class:`_SharedTensorNotice` on accelerate's saving logger, while a checkpoint is saved."""
    notice, saver = _SharedTensorNotice(), logging.getLogger("accelerate.utils.other")
    saver.addFilter(notice)
    try:
        yield
    finally:
        saver.removeFilter(notice)


def save_checkpoint(accelerator, output_dir: str | Path, step: int, config_yaml: str,
                    keep: int = 2) -> Path:
    """Save on every process into a shared temp dir, then publish it with one rename."""
    root = checkpoints_dir(output_dir)
    final = root / f"step-{step:08d}"
    temp = root / f".step-{step:08d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
    accelerator.wait_for_everyone()
    try:
        with _tied_weights_saved_once():
            accelerator.save_state(str(temp))
        if accelerator.is_main_process:
            (temp / "config.yaml").write_text(config_yaml, encoding="utf-8")
            _fsync_tree(temp)
    except OSError as error:  # a full disk, a quota, a vanished mount: say so, free the space, keep the rest
        shutil.rmtree(temp, ignore_errors=True)
        found = list_checkpoints(output_dir)
        kept = f"the previous checkpoint {found[-1]} is intact" if found else "there is no earlier checkpoint"
        failed = OSError(error.errno, f"could not save checkpoint step {step} in {root}: "
                                      f"{error.strerror or error}; {kept}")
        raise failed from error
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # the same step saved again (e.g. a signal right after a periodic save)
            _discard(final)
        temp.rename(final)
        _prune(root, keep)
    accelerator.wait_for_everyone()
    return final


def _fsync_tree(path: Path) -> None:
    import os

    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def _discard(checkpoint: Path) -> None:
    """Delete a checkpoint: one atomic rename out of sight first, so a kill never leaves half of it."""
    aside = checkpoint.with_name(f".{checkpoint.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    checkpoint.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _prune(root: Path, keep: int) -> None:
    for stale in [*root.glob(".step-*.tmp"), *root.glob(".step-*.old")]:  # what killed saves left
        shutil.rmtree(stale, ignore_errors=True)
    found = list_checkpoints(root.parent)
    for old in found[:-keep] if keep > 0 else []:
        _discard(old)
