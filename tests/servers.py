"""Real glm-serve processes for tests: a free port on 127.0.0.1, ready when /health answers, always stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def spawned(cmd: list[str], port: int, ready: str = "/health", name: str = "glm-serve", timeout: float = 120,
            env: dict | None = None):
    """A server subprocess on 127.0.0.1:`port` until GET `ready` answers 200; stopped (SIGTERM, then SIGKILL) at
    the end. Yields {"base": URL}; "log" holds its output once it has stopped (a file, not a pipe nobody reads,
    which would fill and block the server)."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    out = {"base": f"http://127.0.0.1:{port}"}
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"{name} exited {proc.returncode}: {log.read()[-3000:]}")
            try:
                if httpx.get(out["base"] + ready, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{name} did not start in {timeout:.0f} s"
            time.sleep(0.2)
        yield out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        out["log"] = log.read()
        log.close()


@contextmanager
def serving(model: str, *flags: str, env: dict | None = None):
    """`glm-serve MODEL` until /health answers; its output must hold no traceback."""
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "glm-serve"), model, "--port", str(port), "--model-name", "tiny",
           "--log-level", "warning", *flags]
    with spawned(cmd, port, env=env) as server:
        yield server["base"]
    assert "Traceback" not in server["log"], server["log"]
