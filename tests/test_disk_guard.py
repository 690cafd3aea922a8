"""The suite's up-front disk check (conftest.py): on a nearly full disk it stops at once with one line saying
where and how much, instead of failing writes one by one and stalling until CI's time limit."""
import os
import subprocess
import sys

from conftest import REPO

ONE_TEST = "tests/test_layout.py::test_cycle_finder_finds_one"


def _pytest(min_free_mb: int, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LUSE_TEST_MIN_FREE_MB": str(min_free_mb)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "inner"), ONE_TEST],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_too_little_space_stops_before_any_test(tmp_path):
    run = _pytest(2**40, tmp_path)  # a floor no disk meets
    assert run.returncode == 3, run.stdout + run.stderr
    assert f"{tmp_path.resolve()}: " in run.stdout and "MiB free; the tests need" in run.stdout
    assert "passed" not in run.stdout


def test_enough_space_runs_the_tests(tmp_path):
    run = _pytest(0, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
