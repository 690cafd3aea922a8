"""Crash safety of luse.io: readers always find a complete old or new copy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from luse import io as atomic
from luse.io import atomic_dir, atomic_write_bytes, atomic_write_text, check_writable, cleanup_stale

REPO = Path(__file__).resolve().parents[1]
OLD = {"a.txt": "old a", "b.txt": "old b"}
NEW = {"a.txt": "new a", "b.txt": "new b", "sub/c.txt": "new c"}


def write_tree(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")


def read_tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden_entries(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def existing(tmp_path) -> Path:
    final = tmp_path / "export"
    final.mkdir()
    write_tree(final, OLD)
    return final


def test_creates_a_new_directory_and_leaves_nothing_else(tmp_path):
    final = tmp_path / "deep" / "export"
    with atomic_dir(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".export.tmp-")
        assert not final.exists()
        write_tree(tmp, NEW)
    assert read_tree(final) == NEW
    assert os.listdir(final.parent) == ["export"]


def test_replaces_an_existing_directory_only_on_success(existing):
    with atomic_dir(existing) as tmp:
        write_tree(tmp, NEW)
        assert read_tree(existing) == OLD  # readers still see the old copy while we write
    assert read_tree(existing) == NEW
    assert os.listdir(existing.parent) == ["export"]


def test_exception_leaves_old_directory_and_no_temp(existing):
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_dir(existing) as tmp:
            write_tree(tmp, NEW)
            raise RuntimeError("disk on fire")
    assert read_tree(existing) == OLD
    assert os.listdir(existing.parent) == ["export"]


def test_exception_without_old_directory_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(tmp_path / "export") as tmp:
            write_tree(tmp, NEW)
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_refuses_to_replace_a_file(tmp_path):
    target = tmp_path / "export"
    target.write_text("not a directory")
    with pytest.raises(NotADirectoryError):
        with atomic_dir(target):
            pytest.fail("the block must not run")
    assert target.read_text() == "not a directory"


def test_failed_second_rename_rolls_back_to_the_old_copy(existing, monkeypatch):
    real_rename, calls = os.rename, []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old copy already aside, new copy not yet in place
            raise OSError("simulated failure")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", flaky_rename)
    with pytest.raises(OSError, match="simulated failure"):
        with atomic_dir(existing) as tmp:
            write_tree(tmp, NEW)
    assert read_tree(existing) == OLD
    assert os.listdir(existing.parent) == ["export"]
    assert len(calls) == 3  # aside, (failed) in, back


def test_failed_rollback_is_repaired_by_cleanup_stale(existing, monkeypatch):
    real_rename, calls = os.rename, []

    def rename_once(src, dst):
        calls.append((src, dst))
        if len(calls) > 1:
            raise OSError("simulated failure")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename_once)
    with pytest.raises(OSError):
        with atomic_dir(existing) as tmp:
            write_tree(tmp, NEW)
    monkeypatch.undo()
    assert not existing.exists()
    [old] = hidden_entries(existing.parent)
    assert old.startswith(".export.old-")
    # Our own pid is alive, so the copy is ours and left alone; a new process would see it as stale.
    assert cleanup_stale(existing.parent) == []
    monkeypatch.setattr(atomic, "_pid_alive", lambda pid: False)
    cleanup_stale(existing.parent)
    assert read_tree(existing) == OLD
    assert os.listdir(existing.parent) == ["export"]


CRASHING_WRITER = textwrap.dedent("""
    import os, shutil, sys
    from pathlib import Path
    from luse import io as atomic

    final, crash_at = Path(sys.argv[1]), sys.argv[2]
    renames = 0
    real_rename = os.rename

    def rename(src, dst):
        global renames
        renames += 1
        if crash_at == f"rename{renames}":
            os._exit(9)
        real_rename(src, dst)

    def rmtree(path, ignore_errors=False):
        if crash_at == "delete_old" and ".old-" in str(path):
            os._exit(9)
        raise AssertionError(f"unexpected rmtree({path})")

    atomic.os.rename = rename
    atomic.shutil.rmtree = rmtree
    with atomic.atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("new a")
        if crash_at == "write":
            os._exit(9)
        (tmp / "b.txt").write_text("new b")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "c.txt").write_text("new c")
""")


@pytest.mark.parametrize(("crash_at", "survivor"), [
    ("write", OLD),        # died while writing the new copy
    ("rename1", OLD),      # died just before moving the old copy aside
    ("rename2", OLD),      # died with the old copy aside and the new one not yet in place
    ("delete_old", NEW),   # died while deleting the old copy
])
def test_hard_crash_leaves_a_complete_copy(existing, crash_at, survivor):
    """A real process death (os._exit, no cleanup code runs) at each step of the swap."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(existing), crash_at],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 9, result.stderr
    leftovers = hidden_entries(existing.parent)
    assert leftovers, "a crash mid-swap leaves temp/old entries behind"
    if existing.exists():  # what a reader sees right after the crash, before any repair
        assert read_tree(existing) in (OLD, NEW)

    removed = cleanup_stale(existing.parent)
    assert read_tree(existing) == survivor
    assert os.listdir(existing.parent) == ["export"]
    assert all(path.name in leftovers for path in removed)


def test_cleanup_stale_spares_live_writers(tmp_path):
    live = tmp_path / f".export.tmp-{os.getpid()}-abcd1234"
    live.mkdir()
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    dead_dir = tmp_path / f".export.tmp-{dead_pid}-00ff00ff"
    dead_dir.mkdir()
    dead_file = tmp_path / f".cache.json.tmp-{dead_pid}-12345678"
    dead_file.write_text("partial")
    unrelated = tmp_path / ".gitignore"
    unrelated.write_text("*")

    removed = cleanup_stale(tmp_path)
    assert sorted(removed) == sorted([dead_dir, dead_file])
    assert live.exists() and unrelated.exists()
    assert cleanup_stale(tmp_path / "missing") == []


def test_atomic_write_bytes_and_text(tmp_path):
    path = tmp_path / "cache" / "index.bin"
    assert atomic_write_bytes(path, b"\x00first") == path
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    text_path = atomic_write_text(tmp_path / "note.txt", "中文\n第二行\n")
    assert text_path.read_text(encoding="utf-8") == "中文\n第二行\n"
    assert sorted(os.listdir(tmp_path)) == ["cache", "note.txt"]
    assert os.listdir(path.parent) == ["index.bin"]


def test_atomic_write_failure_keeps_old_content_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_text('{"step": 1}')

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, '{"step": 2}')
    assert path.read_text() == '{"step": 1}'
    assert os.listdir(tmp_path) == ["state.json"]


def test_check_writable_creates_the_directory_and_reports_low_space(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_writable(target) is None
    assert target.is_dir() and os.listdir(target) == []
    assert check_writable(target, min_free_bytes=1024) is None
    message = check_writable(target, min_free_bytes=1 << 62)
    assert message is not None and "free" in message and str(target) in message
    assert "\n" not in message


def test_check_writable_raises_a_clear_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OSError) as error:
        check_writable(blocker / "out")
    message = str(error.value)
    assert message.startswith(f"output directory {blocker / 'out'} is not writable: ")
    assert "\n" not in message


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permissions")
def test_check_writable_read_only_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            check_writable(locked)
    finally:
        locked.chmod(0o700)
