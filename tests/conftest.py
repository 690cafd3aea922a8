import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# The suite writes tiny models, checkpoints and exports under pytest's temporary folder. On a full disk
# those writes fail one by one and a run can stall (seen in CI), so it dies at its time limit
# instead of saying why: check the space once, up front (a whole run keeps about 1 GiB of temporary files).
# LUSE_TEST_MIN_FREE_MB overrides the floor.
MIN_FREE_MB = int(os.environ.get("LUSE_TEST_MIN_FREE_MB", "2048"))


def pytest_sessionstart(session):
    basetemp = session.config.option.basetemp
    where = Path(basetemp).resolve().parent if basetemp else Path(tempfile.gettempdir())
    while not where.exists():
        where = where.parent
    free_mb = shutil.disk_usage(where).free // 2**20
    if free_mb < MIN_FREE_MB:
        pytest.exit(f"{where}: {free_mb} MiB free; the tests need {MIN_FREE_MB} MiB "
                    "(free some space, or point TMPDIR or --basetemp elsewhere)", returncode=3)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_roformer(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-roformer"), "roformer")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one thread avoids the per-op thread hand-off cost (20x on a busy 2-core machine).
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate keeps one process-wide state and refuses a second ``Accelerator`` with another
    mixed precision; tests build several in one process (fp32 ones, and the trainer's, which is bf16
    on CPUs with native bf16), so each test starts from a clean state, as accelerate's own tests do."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def recipe_main(name: str):
    """The ``main(argv)`` of ``recipes/NAME.py``, loaded without running the script (in-process runs)."""
    import runpy

    return runpy.run_path(str(REPO / "recipes" / f"{name}.py"))["main"]


def benchmark_module(name: str):
    """``benchmarks/NAME.py`` imported as module ``NAME``: the scripts import their sibling ``common.py``,
    and dataclasses look their module up in ``sys.modules``, so they are imported, not exec'd by path."""
    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)
