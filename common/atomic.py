"""Atomic outputs — the one way glmkit writes files and directories: beside OUT under a temporary name, synced to
disk, renamed at the end.

Every temporary a run makes beside OUT — the output being written, a stage directory for intermediates, the old
output being swapped out by --force — is a hidden `.NAME.PID[.KIND].partial` sibling. An exception, Ctrl-C or
SIGTERM removes them; after a SIGKILL (or an out-of-memory kill) the next glmkit run writing beside OUT removes
those whose process is gone. OUT itself is never half-written. `write_text` / `write_bytes` are the same for small
files (manifests, reports), which may replace what is there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import threading
from pathlib import Path

from glmkit.glm4.errors import GlmkitError


def check_output(out: str | Path, force: bool) -> Path:
    out = Path(out)
    if out.exists() and not force:
        raise GlmkitError(f"{out} already exists; pass --force to replace it or choose another output path")
    return out


def partial_path(out: Path, kind: str = "") -> Path:
    """This process's hidden temporary of a given kind beside `out`."""
    return out.parent / f".{out.name}.{os.getpid()}{'.' + kind if kind else ''}.partial"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove the temporaries of earlier runs beside `out` that were killed outright (their process is gone)."""
    removed = []
    for p in out.parent.glob(f".{out.name}.*.partial"):
        pid, _, kind = p.name[len(out.name) + 2:-len(".partial")].partition(".")
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if kind == "old" and not out.exists():  # killed mid-swap: the previous output goes back in place
            os.replace(p, out)
            continue
        _remove(p)
        removed.append(p)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _fsync(path: Path) -> None:
    """Flush a file, or every file of a directory and the directory itself, to disk before it is renamed."""
    if path.is_dir() and not path.is_symlink():
        for f in sorted(path.rglob("*")):
            if f.is_file() and not f.is_symlink():
                _fsync_fd(f, os.O_RDONLY)
        for d in [path, *(d for d in path.rglob("*") if d.is_dir() and not d.is_symlink())]:
            _fsync_fd(d, os.O_RDONLY)
    elif path.is_file():
        _fsync_fd(path, os.O_RDONLY)


def _fsync_fd(path: Path, flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:  # directories cannot be opened on some platforms (Windows): nothing to sync there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """A plain `kill` should clean up like Ctrl-C does, so turn SIGTERM into KeyboardInterrupt meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stage_dir(out: str | Path):
    """A scratch directory for a conversion's intermediates (an f16 GGUF before k-quantization, a remapped
    source), beside `out` so it is on the output's filesystem, and removed however the run ends."""
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    stage = partial_path(out, "stage")
    _remove(stage)
    with _sigterm_as_interrupt():  # before mkdir: a signal between the two would leave the stage behind
        try:
            stage.mkdir()
            yield stage
        finally:
            _remove(stage)


@contextlib.contextmanager
def atomic_output(out: str | Path, force: bool = False, is_dir: bool = True):
    """Yield a temporary path (a directory, or a file name when is_dir=False); on success it becomes `out`."""
    out = check_output(out, force).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = partial_path(out)
    _remove(tmp)
    with _sigterm_as_interrupt():  # before mkdir: a signal between the two would leave the temporary behind
        try:
            if is_dir:
                tmp.mkdir()
            yield tmp
            _fsync(tmp)
            if out.is_dir() and not out.is_symlink():  # --force over a directory: swap, then drop the old one
                if _exchange(tmp, out):
                    _remove(tmp)
                else:  # a kill between the two renames is undone by the next run (clean_stale)
                    old = partial_path(out, "old")
                    os.replace(out, old)
                    os.replace(tmp, out)
                    _remove(old)
            else:  # a file (or nothing) at out: one atomic rename
                os.replace(tmp, out)
            _fsync_fd(out.parent, os.O_RDONLY)
        except BaseException:
            _remove(tmp)
            raise


def write_text(path: str | Path, text: str) -> Path:
    """Write a small text file atomically, replacing any previous one: a reader never sees half of it."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with atomic_output(path, force=True, is_dir=False) as tmp:
        tmp.write_bytes(data)
    return path
