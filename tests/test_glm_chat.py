"""glm-chat driven through a pseudo-terminal, as a person would use it."""

import subprocess
import sys

import pexpect
import pytest

CMD = [sys.executable, "-m", "glmkit.runtimes", "synthetic:glm4:tiny", "--backend", "transformers"]


@pytest.fixture
def chat(synthetic):
    synthetic("glm4")  # made before the clock of each expect starts

    def spawn(*args):
        child = pexpect.spawn(CMD[0], CMD[1:] + list(args), encoding="utf-8", timeout=180)
        child.expect("you> ")
        return child
    return spawn


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
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_stops_the_answer_and_returns_to_the_prompt(chat):
    child = chat("--max-new-tokens", "20000", "--ignore-eos")
    child.sendline("write until I stop you")
    child.expect("glm> ")
    child.expect(r"\S{20}")  # the answer is streaming
    child.sendintr()
    child.expect(r"\[stopped\]")
    child.expect("you> ")
    child.sendline("/system be brief")
    child.expect(r"\[system prompt set\]")
    child.expect("you> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


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
