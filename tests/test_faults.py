"""Faults: SIGKILL at random moments, SIGTERM/SIGINT, a full disk, non-finite gradients, two processes.

The kill tests are the fast version of ``benchmarks/faults.py`` (same code, fewer kills): a child
process (``tests/fault_script.py``) trains, rewrites a synonym cache or re-exports a model and is
SIGKILLed at a seeded random moment; the run must resume to bitwise identical weights and the old
file or directory must survive every kill.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
from pathlib import Path

import pytest
import torch
from conftest import benchmark_module
from safetensors.torch import load_file
from test_trainer import make_items  # 96 fixed sentences, reshuffled per epoch

from luse.config import load_config
from luse.model.encoder import SentenceEncoder
from luse.objectives.views import ViewsObjective
from luse.train import train
from luse.train.checkpoint import list_checkpoints, resolve_resume
from luse.train.signals import RELAY_WINDOW_S, GracefulStop
from luse.train.step import NonFiniteLossError

faults = benchmark_module("faults")  # benchmarks/faults.py: the kill harness

DEFAULTS = {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "save_every": 1, "eval.every": 0, "log_every": 1,
            "report_to": "none", "views.dropout": 1, "views.eda": 0, "model.pooling": "mean"}


def _config(tmp_path, name, **overrides):
    values = {"output_dir": tmp_path / name, **DEFAULTS, **overrides}
    return load_config(None, [f"{key}={value}" for key, value in values.items()])


def _run(config, model_dir, objective_cls=ViewsObjective):
    encoder = SentenceEncoder.from_pretrained(str(model_dir), pooling=config.model.pooling,
                                              max_length=config.model.max_length)
    objective = objective_cls(encoder.tokenizer, config.model.max_length, config.views, config.loss)
    return train(config, objective, make_items, encoder=encoder)


# --- SIGKILL ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_training_resumes_to_identical_weights(tiny_bert, tmp_path):
    reference, span = faults.reference_run(tiny_bert, tmp_path, steps=8, workers=0)
    kills, final, runs = faults.killed_training(tiny_bert, tmp_path, kills=2, steps=8, workers=0, span=span,
                                                rng=random.Random(3))
    assert len(kills) == 2 and runs == 3
    assert all(kill.loads for kill in kills), [kill.problems for kill in kills]
    assert faults.same_tensors(reference, final)
    out = tmp_path / "killed"
    # Whatever the kills left (half-written .step-N.tmp dirs, export temp dirs) is gone after the last run.
    assert faults.hidden_entries(out / "checkpoints") == [] and faults.hidden_entries(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cache", "export"])
def test_sigkill_while_rewriting_keeps_the_old_copy(kind, tiny_bert, tmp_path):
    source = faults.write_vectors(tmp_path / "vectors.txt", words=800) if kind == "cache" else tiny_bert
    target = tmp_path / "out" / ("synonyms.lsc" if kind == "cache" else "model")
    target.parent.mkdir()
    kills = faults.killed_writes(kind, source, target, tmp_path, kills=1, rng=random.Random(5))
    assert [kill.loads for kill in kills] == [True], [kill.problems for kill in kills]


def test_half_written_checkpoint_is_ignored_and_cleaned(tiny_bert, tmp_path):
    """What a kill during a save leaves (.step-N.tmp, .step-N.old) is never resumed from, and the next save removes it."""
    first = _run(_config(tmp_path, "run", max_steps=2), tiny_bert)
    root = tmp_path / "run" / "checkpoints"
    assert first.step == 2 and [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000001",
                                                                                          "step-00000002"]
    half = root / ".step-00000003.tmp"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 10)  # cut short
    (root / ".step-00000001.old").mkdir()  # a prune interrupted after its rename
    assert resolve_resume("latest", tmp_path / "run").name == "step-00000002"
    resumed = _run(_config(tmp_path, "run", max_steps=3, resume="latest"), tiny_bert)
    assert resumed.step == 3
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002", "step-00000003"]


def test_resaving_a_step_never_deletes_it_in_place(tiny_bert, tmp_path, monkeypatch):
    """The final save repeats the last periodic one; the old copy is renamed aside before it is deleted."""
    import shutil

    import luse.train.checkpoint as checkpoint

    deleted = []
    real_rmtree = shutil.rmtree

    def recording_rmtree(path, *args, **kwargs):
        deleted.append(Path(path).name)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", recording_rmtree)
    result = _run(_config(tmp_path, "resave", max_steps=2, keep_checkpoints=1), tiny_bert)
    assert result.step == 2
    assert deleted and not any(checkpoint.STEP_DIR.match(name) for name in deleted), deleted


# --- signals ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_second_signal_exits_at_once(sig):
    import time

    with GracefulStop() as stop:
        os.kill(os.getpid(), sig)
        assert stop.signal_name == sig.name  # the first asks for a checkpoint and a clean stop
        os.kill(os.getpid(), signal.SIGTERM)  # a launcher passing the stop on, milliseconds later: the same stop
        assert stop.signal_name == sig.name
        time.sleep(RELAY_WINDOW_S + 0.1)
        with pytest.raises(SystemExit) as exited:  # the user asking again
            os.kill(os.getpid(), sig)
        assert exited.value.code == 128 + sig
    assert signal.getsignal(sig) is not stop._handle  # the previous handlers are back


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_stops_cleanly(sig, tiny_bert, tmp_path):
    """A signal during step 2 (sent by the evaluation): the step ends, a checkpoint is saved, train() returns."""

    def signal_at_step_2(encoder):
        os.kill(os.getpid(), sig)
        return {"score": None, "table": ""}

    config = _config(tmp_path, "sig", save_every=0, max_steps=5, **{"eval.every": 2})
    before = signal.getsignal(sig)  # SIG_IGN for SIGINT when the suite runs in the background (nohup, CI)
    encoder = SentenceEncoder.from_pretrained(str(tiny_bert), pooling="mean")
    objective = ViewsObjective(encoder.tokenizer, config.model.max_length, config.views, config.loss)
    result = train(config, objective, make_items, encoder=encoder, evaluate=signal_at_step_2)
    assert result.interrupted == sig.name and result.step == 2 and result.final_dir is None
    (saved,) = list_checkpoints(tmp_path / "sig")
    assert saved.name == "step-00000002"
    faults.load_checkpoint(saved)
    assert signal.getsignal(sig) == before  # the trainer put the previous handler back


@pytest.mark.slow
def test_second_sigterm_exits_at_once_even_mid_save(tiny_bert, tmp_path):
    """The first SIGTERM asks for a checkpoint; a second one during that (slow) save ends the run at once."""
    import time

    out = tmp_path / "run"
    args = [*faults.train_args(tiny_bert, out, steps=400, workers=0), "--save-delay", "60"]
    child = faults.Child(args, tmp_path / "run.log").start()
    try:
        assert child.wait_for("step")
        os.kill(child.process.pid, signal.SIGTERM)
        first = time.monotonic()
        assert child.wait_for("save")
        time.sleep(max(0.2, RELAY_WINDOW_S + 0.2 - (time.monotonic() - first)))  # not a relayed copy
        sent = time.monotonic()
        os.kill(child.process.pid, signal.SIGTERM)
        assert child.process.wait(timeout=120) == 128 + signal.SIGTERM
        assert time.monotonic() - sent < 30  # did not wait for the 60 s save (exit itself can take seconds)
    finally:
        if child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGKILL)
    assert "stopped by SIGTERM" not in child.log.read_text()
    assert not list_checkpoints(out)  # the interrupted save published nothing


# Stops under the launchers, with DataLoader workers on (benchmarks/faults.py's stop sweep runs every case):
# the signal to the launcher, to its process group (Ctrl-C, a scheduler) or to the training process saves
# a checkpoint and exits 130 / 143. Before workers ignored stop signals, a SIGTERM to the group killed the
# worker and the run failed unsaved; a Ctrl-C was relayed by the launcher as a second signal, also unsaved.
@pytest.mark.slow
@pytest.mark.parametrize("front, processes, target, sig", [
    ("accelerate", 1, "group", "SIGTERM"),
    ("accelerate", 1, "group", "SIGINT"),
    ("accelerate", 1, "launcher", "SIGTERM"),
    ("luse", 1, "training process", "SIGTERM"),
    ("accelerate", 2, "group", "SIGTERM"),
])
def test_stop_under_a_launcher_with_workers_saves(front, processes, target, sig, tiny_bert, tmp_path):
    from fault_script import sentences

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences(400)) + "\n", encoding="utf-8")
    found = faults.stop_signal(tmp_path, tiny_bert, corpus, front=front, processes=processes, target=target, sig=sig)
    assert found["saved_step"] and found["said_stopped"], found
    assert found["exit_code"] == found["expected_exit_code"], found
    assert not found["worker_killed"] and not found["traceback"], found


# --- full disk, unwritable output ------------------------------------------------------------

def test_unwritable_output_dir_fails_before_training(tiny_bert, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    loaded = []
    monkeypatch.setattr(SentenceEncoder, "from_pretrained", lambda *a, **k: loaded.append(1))
    config = _config(tmp_path, "a-file/run")
    with pytest.raises(OSError, match=r"output directory .*a-file/run is not writable"):
        train(config, None, make_items)
    assert not loaded  # it failed before loading any model


def test_full_disk_during_save_keeps_the_previous_checkpoint(tiny_bert, tmp_path, monkeypatch):
    from accelerate import Accelerator

    real_save = Accelerator.save_state
    calls = []

    def save_state(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:  # the second save runs out of space half-way through
            Path(output_dir, "model.safetensors").write_bytes(b"\x00" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    with pytest.raises(OSError) as failed:
        _run(_config(tmp_path, "full", max_steps=3), tiny_bert)
    message = str(failed.value)
    assert failed.value.errno == errno.ENOSPC and "\n" not in message
    assert "could not save checkpoint step 2" in message and "No space left on device" in message
    assert "step-00000001 is intact" in message
    root = tmp_path / "full" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-00000001"]  # the partial one is gone
    faults.load_checkpoint(root / "step-00000001")


# --- non-finite gradients --------------------------------------------------------------------

class NaNGradientAtStep2(ViewsObjective):
    """A finite loss whose gradient is NaN on the second call: only the gradient check can see it."""

    calls = 0

    def loss(self, embeddings, batch):
        NaNGradientAtStep2.calls += 1
        if NaNGradientAtStep2.calls == 2:
            embeddings.register_hook(lambda grad: grad * float("nan"))
        return super().loss(embeddings, batch)


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0])
def test_nan_gradient_stops_naming_the_step(tiny_bert, tmp_path, max_grad_norm):
    NaNGradientAtStep2.calls = 0
    config = _config(tmp_path, "nan", max_grad_norm=max_grad_norm)
    with pytest.raises(NonFiniteLossError, match="non-finite loss or gradient at step 2 "):
        _run(config, tiny_bert, NaNGradientAtStep2)
    (kept,) = list_checkpoints(tmp_path / "nan")
    assert kept.name == "step-00000001"
    assert all(torch.isfinite(t).all() for t in load_file(str(kept / "model.safetensors")).values())


def test_nan_gradient_skipped_when_configured(tiny_bert, tmp_path, caplog):
    NaNGradientAtStep2.calls = 0
    config = _config(tmp_path, "skip", on_nan="skip", max_grad_norm=0, max_steps=3)
    with caplog.at_level("WARNING", logger="luse"):
        result = _run(config, tiny_bert, NaNGradientAtStep2)
    assert result.step == 3
    assert "non-finite loss or gradient at step 2 " in caplog.text and "step skipped" in caplog.text
    weights = load_file(str(result.final_dir / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    state = torch.load(list_checkpoints(tmp_path / "skip")[-1] / "custom_checkpoint_1.pkl", weights_only=False)
    assert state["skipped_steps"] == 1


def test_kill_phases_from_leftovers():
    """The harness's report pieces: kill phases are classified from what a kill left on disk."""
    kill = faults.Kill(0.1, "save", [".step-00000004.tmp"])
    assert faults.kill_phase(kill) == "save (checkpoint half-written)"
    assert faults.kill_phase(faults.Kill(0.1, "eval", [".best.tmp-12-ab"])) == "eval (half-written: temp copy left)"
    # A leftover of the previous kill, not yet cleaned by the resumed run, says nothing about this one.
    later = faults.Kill(0.2, "step", [".step-00000004.tmp"])
    assert faults.kill_phases([kill, later]) == ["save (checkpoint half-written)", "step"]
    assert json.loads(json.dumps(faults.summarise_kills([kill])))["phases"] == {"save (checkpoint half-written)": 1}


# --- two processes ---------------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_follow_the_one_process_loss_curve_and_resume(tmp_path):
    """Gathered negatives: 2 processes x 4 sentences log the same loss at every step as 1 process x 8,
    and a 2-process run resumed from its step-2 checkpoint ends bitwise identical."""
    found = faults.two_processes(tmp_path, steps=4)
    assert len(found["losses_one_process"]) == 4
    assert found["max_abs_loss_difference"] < 1e-4, found
    assert len(set(found["losses_one_process"])) > 1  # the loss moves: the comparison is not vacuous
    assert found["resume_said"] and found["resume_identical"], found
