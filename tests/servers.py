"""Real glm-serve processes for tests: a free port on 127.0.0.1, ready when /health answers, always stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(model: str, *flags: str, env: dict | None = None):
    """`glm-serve MODEL` in a subprocess until /health answers; stopped (SIGTERM, then SIGKILL) at the end."""
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "glm-serve"), model, "--port", str(port), "--model-name", "tiny",
           "--log-level", "warning", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"glm-serve exited {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "glm-serve did not start in 120 s"
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = proc.stdout.read()
    assert "Traceback" not in out, out
