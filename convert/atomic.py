"""Atomic outputs — the one way glmkit writes files and directories: beside OUT under a temporary name, renamed
at the end.

An exception, Ctrl-C or SIGTERM removes the temporary; a SIGKILL leaves only a hidden `.NAME.PID.partial`
sibling, which the next run cleans up. OUT itself is never half-written. `write_text` / `write_bytes` are the
same for small files (manifests, reports), which may replace what is there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from pathlib import Path

from .errors import GlmkitError


def check_output(out: str | Path, force: bool) -> Path:
    out = Path(out)
    if out.exists() and not force:
        raise GlmkitError(f"{out} already exists; pass --force to replace it or choose another output path")
    return out


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


def _clean_stale(out: Path) -> None:
    """Remove partial outputs of earlier runs that were killed outright (their process is gone)."""
    for p in out.parent.glob(f".{out.name}.*.partial"):
        pid = p.name[len(out.name) + 2:-len(".partial")]
        if pid.isdigit() and not _pid_alive(int(pid)):
            _remove(p)


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
def atomic_output(out: str | Path, force: bool = False, is_dir: bool = True):
    """Yield a temporary path (a directory, or a file name when is_dir=False); on success it becomes `out`."""
    out = check_output(out, force).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    tmp = out.parent / f".{out.name}.{os.getpid()}.partial"
    _remove(tmp)
    if is_dir:
        tmp.mkdir()
    with _sigterm_as_interrupt():
        try:
            yield tmp
            if out.exists():  # --force: swap in the new output, then drop the old one
                old = out.parent / f".{out.name}.{os.getpid()}.old.partial"
                os.replace(out, old)
                os.replace(tmp, out)
                _remove(old)
            else:
                os.replace(tmp, out)
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
