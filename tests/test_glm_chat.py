"""glm-chat driven through a pseudo-terminal, as a person would use it."""

import os
import signal
import subprocess
import sys

import pytest
from pexpect import fdpexpect

CMD = [sys.executable, "-m", "glmkit.runtimes", "synthetic:glm4:tiny", "--backend", "transformers"]


def default_signals():
    """Ctrl-C must reach glm-chat as a real SIGINT even when the test runner was started with SIGINT ignored (a
    background job of a non-interactive shell), which children would otherwise inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture
def chat(synthetic):
    """glm-chat on a pseudo-terminal it owns as its controlling terminal, so Ctrl-C (\\x03) is a real SIGINT.

    Started through subprocess (fork+exec in C): pexpect.spawn runs Python in the forked child, which can crash
    when the test process already holds OpenVINO's worker threads."""
    synthetic("glm4")  # made before the clock of each expect starts
    started = []

    def spawn(*args):
        master, slave = os.openpty()
        proc = subprocess.Popen(["setsid", "-c", *CMD, *args], stdin=slave, stdout=slave, stderr=slave,
                                preexec_fn=default_signals)
        os.close(slave)
        child = fdpexpect.fdspawn(master, encoding="utf-8", timeout=180)
        child.proc = proc
        started.append(child)
        child.expect("you> ")
        return child

    yield spawn
    for child in started:
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.wait()


def _stats(child):
    child.sendline("/stats")
    child.expect(r"history (\d+) turns")
    n = int(child.match.group(1))
    child.expect("you> ")
    return n


def test_two_turns_then_reset(chat):
    child = chat("--max-new-tokens", "8", "--ignore-eos")
    for turn, text in enumerate(("hello there", "and again"), start=1):
        child.sendline(text)
        child.expect("glm> ")
        child.expect("you> ")
        assert _stats(child) == turn
    child.sendline("/reset")
    child.expect(r"\[conversation cleared\]")
    child.expect("you> ")
    assert _stats(child) == 0
    child.sendline("/exit")
    assert child.proc.wait(timeout=60) == 0


def test_ctrl_c_stops_the_answer_and_returns_to_the_prompt(chat):
    child = chat("--max-new-tokens", "20000", "--ignore-eos")
    child.sendline("write until I stop you")
    child.expect("glm> ")
    child.expect(r"\S{20}")  # the answer is streaming
    child.send("\x03")  # Ctrl-C: the terminal sends SIGINT to glm-chat
    child.expect(r"\[stopped\]")
    child.expect("you> ")
    child.sendline("/system be brief")
    child.expect(r"\[system prompt set\]")
    child.expect("you> ")
    child.sendline("/exit")
    assert child.proc.wait(timeout=60) == 0


def test_prompt_answers_once_and_exits(synthetic):
    synthetic("glm4")
    r = subprocess.run(CMD + ["--prompt", "def fib(n):", "--max-new-tokens", "12", "--ignore-eos"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip()) > 0 and "you>" not in r.stdout


def test_unknown_model_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "glmkit.runtimes", str(tmp_path / "none"), "--prompt", "hi"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("glm-chat: error:") and "Traceback" not in r.stderr
