"""A killed writer never leaves OUT behind; a SIGKILLed one leaves only a hidden partial the next run removes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from glmkit.common.atomic import atomic_output

WRITER = """
import sys, time
from pathlib import Path
from glmkit.common.atomic import atomic_output
with atomic_output(sys.argv[1]) as tmp:
    (tmp / "half.bin").write_bytes(b"x" * 1000)
    Path(sys.argv[2]).write_text("ready")
    time.sleep(60)
"""


def default_signals():
    """Children get the default SIGINT/SIGTERM dispositions whatever the runner has: a non-interactive shell's
    background job starts with SIGINT ignored, and a child would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(tmp_path):
    out, ready = tmp_path / "out", tmp_path / "ready"
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(ready)], stderr=subprocess.PIPE,
                         preexec_fn=default_signals)
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


@pytest.mark.parametrize("which", ["output", "stage"])
def test_a_signal_right_after_the_temporary_is_made_still_removes_it(tmp_path, monkeypatch, which):
    """The window between making the temporary and arming the cleanup: a SIGTERM landing there (raised as
    KeyboardInterrupt) must not leave a `.partial` behind (it once did, in CI)."""
    from pathlib import Path

    from glmkit.common.atomic import stage_dir

    real_mkdir = Path.mkdir

    def mkdir_then_interrupted(self, *a, **k):
        real_mkdir(self, *a, **k)
        if self.name.endswith(".partial"):
            raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(Path, "mkdir", mkdir_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        with (atomic_output(tmp_path / "out") if which == "output" else stage_dir(tmp_path / "out")):
            pass
    assert list(tmp_path.iterdir()) == []


def test_a_writer_started_with_sigint_ignored_still_cleans_up_on_ctrl_c(tmp_path):
    """The disposition a background job inherits is set back by the test itself (default_signals), so the
    result does not depend on how the test runner was started."""
    out, ready = tmp_path / "out", tmp_path / "ready"
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(ready)], stderr=subprocess.PIPE,
                         preexec_fn=lambda: (ignore(), default_signals()))
    for _ in range(300):
        if ready.exists():
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    assert not out.exists() and sorted(x.name for x in tmp_path.iterdir()) == ["ready"]


def test_a_kill_mid_swap_is_undone_by_the_next_run(tmp_path):
    """--force over a directory, killed between its two renames: the next run puts the previous output back."""
    from glmkit.common.atomic import clean_stale

    out = tmp_path / "out"
    out.mkdir()
    (out / "v").write_text("previous")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    old = tmp_path / f".out.{dead.stdout.strip()}.old.partial"
    os.replace(out, old)  # what a kill between the renames leaves
    clean_stale(out)
    assert (out / "v").read_text() == "previous" and sorted(x.name for x in tmp_path.iterdir()) == ["out"]


def test_force_replaces_a_directory_in_one_step(tmp_path):
    out = tmp_path / "out"
    for version in ("one", "two"):
        with atomic_output(out, force=True) as tmp:
            (tmp / "v").write_text(version)
    assert (out / "v").read_text() == "two" and sorted(x.name for x in tmp_path.iterdir()) == ["out"]


def test_a_sidecar_manifest_of_another_version_of_the_file_counts_as_none(tmp_path):
    from glmkit.common import manifest

    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"a" * 100)
    manifest.write_file(tmp_path / "m.gguf.glmkit.json", {"kind": "gguf", "file_identity": manifest.file_identity(f)})
    assert manifest.read(f)["kind"] == "gguf"
    f.write_bytes(b"GGUF" + b"b" * 100)  # a newer file landed, its manifest did not (a kill between the two)
    assert manifest.read(f) is None


def test_too_little_disk_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from glmkit.convert import GlmkitError, to_gguf

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(GlmkitError, match=r"needs about .* GB on the filesystem of .* GB is free"):
        to_gguf("glm4-tiny", tmp_path / "m.gguf", outtype="q4_k_m", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_an_export_the_memory_cannot_hold_is_refused_beforehand(monkeypatch):
    import psutil

    from glmkit.convert import GlmkitError, preflight

    mem = type("M", (), {"total": 16 * 2**30, "available": 8 * 2**30})
    monkeypatch.setattr(psutil, "virtual_memory", lambda: mem)
    monkeypatch.setattr(psutil, "swap_memory", lambda: type("S", (), {"total": 0}))
    preflight.check_export_memory(9_400_000_000, quiet=True)  # the 9B shape: 7 GB, fits a 16 GB laptop
    with pytest.raises(GlmkitError, match="needs about 23.3 GB of memory; this machine has 16.0 GB"):
        preflight.check_export_memory(33_400_000_000)  # a 32B model does not


def test_kill_campaign_leaves_nothing_behind(tmp_path):
    """Reduced: SIGKILL at seeded random points of real conversions (GGUF k-quant, OpenVINO int4, --to hf from
    chatglm); scripts/kill_campaign.py runs the full one."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("kill_campaign",
                                                  Path(__file__).parents[1] / "scripts" / "kill_campaign.py")
    kc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kc)
    result = kc.campaign(kills=3, seed=7, workdir=tmp_path)
    assert all(r["target_complete"] for r in result["kills"]), result["kills"]
    assert all(not v for v in result["hidden_after_next_run"].values()), result["hidden_after_next_run"]
