"""A killed writer never leaves OUT behind; a SIGKILLed one leaves only a hidden partial the next run removes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from glmkit.convert.atomic import atomic_output

WRITER = """
import sys, time
from pathlib import Path
from glmkit.convert.atomic import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    (tmp / "half.bin").write_bytes(b"x" * 1000)
    Path(sys.argv[2]).write_text("ready")
    time.sleep(60)
"""


def _start(tmp_path):
    out, ready = tmp_path / "out", tmp_path / "ready"
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(ready)], stderr=subprocess.PIPE)
    for _ in range(300):
        if ready.exists():
            return p, out
        time.sleep(0.05)
    p.kill()
    pytest.fail("writer did not start")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_terminated_writer_leaves_nothing(tmp_path, sig):
    p, out = _start(tmp_path)
    p.send_signal(sig)
    p.wait(timeout=30)
    assert p.returncode != 0
    assert not out.exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ready"]


def test_sigkilled_writer_leaves_only_a_hidden_partial_that_is_cleaned(tmp_path):
    p, out = _start(tmp_path)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert not out.exists()
    leftovers = [x for x in tmp_path.iterdir() if x.name.startswith(".out.")]
    assert len(leftovers) == 1
    with atomic_output(out) as tmp:
        (tmp / "done").write_text("ok")
    assert (out / "done").read_text() == "ok"
    assert not [x for x in tmp_path.iterdir() if x.name.startswith(".out.")]


def test_single_file_output(tmp_path):
    with atomic_output(tmp_path / "m.gguf", is_dir=False) as tmp:
        tmp.write_bytes(b"GGUF")
    assert (tmp_path / "m.gguf").read_bytes() == b"GGUF"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.gguf"]
