"""The lean runtime install (`pip install glmkit`: no torch, transformers, optimum or NNCF) against the full one.

Run by .ci/run in a Python 3.12 venv with GLMKIT_LEAN_FIXTURE=DIR, where the full install left artifacts and what
it computed (scripts/lean_fixture.py): transformers' chat-template renderings and ids, and each artifact's greedy
tokens. In the full install there is nothing to compare, so these tests skip there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

FIXTURE = os.environ.get("GLMKIT_LEAN_FIXTURE")
pytestmark = pytest.mark.skipif(not FIXTURE, reason="lean-install tests run in .ci/run's lean venv "
                                                    "(GLMKIT_LEAN_FIXTURE=DIR from scripts/lean_fixture.py)")
HEAVY = ("torch", "transformers", "optimum", "nncf")


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((Path(FIXTURE) / "expected.json").read_text(encoding="utf-8"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run([str(Path(sys.executable).parent / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=600)


def test_the_lean_install_has_none_of_the_conversion_stack():
    assert [m for m in HEAVY if find_spec(m) is not None] == []
    probe = ("import sys, glmkit.runtimes, glmkit.runtimes.chat, glmkit.serve.app, glmkit.serve.cli, "
             "glmkit.benchmarks.cli, glmkit.benchmarks.run;"
             f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"


def test_templates_render_as_transformers_rendered_them(expected):
    from glmkit.glm4 import template
    from glmkit.runtimes.tokenizer import from_hf

    ir = next(Path(FIXTURE).glob("*ИР"))
    tok = from_hf(ir)
    source_dir = Path(__file__).parent / "data" / "templates"
    for case in expected["templates"]:
        text = template.render((source_dir / case["template"]).read_text(encoding="utf-8"), case["messages"],
                               case["tools"], **tok.template_context)
        assert text == case["text"]
        assert tok.encode(text) == case["ids"]


@pytest.mark.parametrize("backend", ["openvino", "llamacpp"])
def test_same_greedy_tokens_as_the_full_install(expected, backend):
    from glmkit.runtimes import GenerationConfig, load

    runs = [r for r in expected["runs"] if r["backend"] == backend]
    assert runs
    with load(str(Path(FIXTURE) / runs[0]["artifact"])) as rt:
        for run in runs:
            assert rt.prompt_ids(run["prompt"]) == run["prompt_ids"]
            got = rt.generate(run["prompt"], GenerationConfig(max_new_tokens=len(run["token_ids"]), ignore_eos=True))
            assert got.token_ids == run["token_ids"] and got.text == run["text"]


def test_glm4v_answers_about_a_picture_as_the_full_install(expected):
    """glm4v-tiny's three IRs, a picture file, f32 inference: the full install's greedy tokens, with no torch."""
    from glmkit.runtimes import GenerationConfig, load

    runs = [r for r in expected["runs"] if r["backend"] == "glm4v"]
    assert runs
    with load(str(Path(FIXTURE) / runs[0]["artifact"]), dtype="float32") as rt:
        for run in runs:
            messages = [{"role": "user", "content": [{"type": "image", "image": str(Path(FIXTURE) / run["image"])},
                                                     {"type": "text", "text": run["question"]}]}]
            got = rt.generate(messages, GenerationConfig(max_new_tokens=len(run["token_ids"]), ignore_eos=True))
            assert got.token_ids == run["token_ids"] and got.text == run["text"]
        assert rt.images_encoded == 1  # one picture, asked four times


@pytest.mark.parametrize("command", [["glm-convert", "glm4-tiny", "--to", "gguf"], ["glm-chat", "glm4-tiny"],
                                     ["glm-bench", "run", "x.gguf", "--reference", "glm4-tiny"]])
def test_a_command_that_needs_the_conversion_half_says_so(command, tmp_path):
    if command[0] == "glm-bench":
        command[2] = str(next(Path(FIXTURE).glob("*.gguf")))
    r = _cli(*command)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "glmkit[convert]"' in lines[0], r.stderr


def test_glm_bench_runs_on_an_artifact_and_writes_its_reports(tmp_path):
    gguf = next(Path(FIXTURE).glob("*.gguf"))
    r = _cli("glm-bench", "run", str(gguf), "--prompt-lengths", "16", "--gen", "4", "--reps", "1", "-q",
             "-o", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["results"][0]["backend"] == "llamacpp" and data["results"][0]["speed"]["decode_tps"]["median"] > 0
    assert (tmp_path / "r.md").is_file() and not list(tmp_path.glob("*.png"))  # plots need glmkit[plots]


@pytest.mark.parametrize("backend", ["openvino", "llamacpp"])
def test_glm_serve_answers_as_the_full_install(expected, backend):
    from openai import OpenAI
    from servers import serving

    run = next(r for r in expected["runs"] if r["backend"] == backend and isinstance(r["prompt"], list))
    with serving(str(Path(FIXTURE) / run["artifact"])) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)
        r = client.chat.completions.create(model="tiny", messages=run["prompt"], temperature=0,
                                           max_tokens=len(run["token_ids"]))
    assert r.choices[0].message.content == run["answer"] and r.usage.completion_tokens == run["answer_tokens"]
    assert r.usage.prompt_tokens == len(run["prompt_ids"])
