"""Cross-process negatives for real: two CPU processes (gloo) must reproduce one process exactly.

``tests/gather_script.py`` runs every loss with ``gather=True`` under DDP on a fixed global batch;
we run it once as two processes through ``accelerate launch`` and once as a single process, and
compare the averaged loss and the parameter gradients.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from luse.losses.distributed import gather_with_grad, global_mean_share, rank, world_size

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "gather_script.py"
LOSS_CASES = ["luse", "luse_unequal", "simcse_unsup", "simcse_sup", "cosent", "bert_luse"]
TOLERANCE = 1e-6


def test_helpers_without_process_group():
    assert world_size() == 1
    assert rank() == 0
    t = torch.randn(3, 4)
    gathered, offset = gather_with_grad(t)
    assert gathered is t and offset == 0
    losses = torch.tensor([1.0, 2.0, 6.0])
    assert global_mean_share(losses, 3).item() == pytest.approx(3.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(command: list[str], home: Path) -> subprocess.Popen:
    # One thread per process: the ranks share a small machine; a private HF_HOME keeps a user's
    # accelerate config out of the launch.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(home), "TOKENIZERS_PARALLELISM": "false"}
    # A session of its own, so a failed run can take its launcher's worker processes down with it.
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def _finish(process: subprocess.Popen, out: Path) -> dict:
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        _stop(process)
        pytest.fail(f"{' '.join(process.args)} timed out after 120 s")
    assert process.returncode == 0, f"{' '.join(process.args)} failed:\n{output[-3000:]}"
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory) -> tuple[dict, dict]:
    """(one process, two processes): the script's results, both runs started side by side."""
    work = tmp_path_factory.mktemp("gather")
    one, two = work / "one.pt", work / "two.pt"
    # `--cpu` alone makes accelerate launch a single process; `--multi_gpu` goes through torchrun,
    # and the script's Accelerator(cpu=True) then picks MULTI_CPU over gloo.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port())]
    double = _start([*launch, str(SCRIPT), str(two), "--bert", str(tiny_bert)], work)
    single = _start([sys.executable, str(SCRIPT), str(one), "--bert", str(tiny_bert)], work)
    try:
        return _finish(single, one), _finish(double, two)
    finally:
        _stop(single)
        _stop(double)


@pytest.mark.slow
def test_script_really_ran_two_processes(runs):
    single, double = runs
    assert (single["world_size"], double["world_size"]) == (1, 2)


@pytest.mark.slow
def test_gather_with_grad_on_unequal_slices(runs):
    single, double = runs
    rows = single["raw_gather"]["gathered"]
    torch.testing.assert_close(double["raw_gather"]["gathered"], rows, rtol=0, atol=0)
    assert double["raw_gather"]["offsets"] == [0, 3]
    # Both ranks back-propagate the same weighted sum, so each slice gets the gradient twice.
    weights = double["raw_gather"]["weights"]
    local_grads = double["raw_gather"]["local_grads"]
    torch.testing.assert_close(torch.cat(local_grads), 2 * weights, rtol=0, atol=0)
    assert [len(g) for g in local_grads] == [3, 5]


@pytest.mark.slow
@pytest.mark.parametrize("case", LOSS_CASES)
def test_two_processes_match_one_process(runs, case):
    single, double = runs[0][case], runs[1][case]
    assert abs(double["loss"] - single["loss"]) < TOLERANCE
    assert single["grads"].keys() == double["grads"].keys()
    for name, grad in single["grads"].items():
        assert grad.abs().max() > 0, f"{case}: {name} got no gradient, the comparison would be vacuous"
        torch.testing.assert_close(double["grads"][name], grad, rtol=0, atol=TOLERANCE, msg=f"{case}: {name}")
