import os
import subprocess
import sys
from pathlib import Path

import pytest

TEXT = ("Hello, world! 你好，世界。こんにちは世界 안녕하세요 Привет, мир! مرحبا بالعالم Grüße aus Köln. 🤖🚀👩‍💻\n"
        "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # 12345678\n"
        "\t\tindented   spaces    and\r\nwindows lines 3.14159 0x1F 1,000,000")


@pytest.fixture(scope="session", autouse=True)
def glmkit_cache(tmp_path_factory):
    """Synthetic checkpoints are made once per test session in a private cache; the hub is never reached."""
    cache = tmp_path_factory.mktemp("glmkit-cache")
    os.environ["GLMKIT_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf-home"))
    return cache


@pytest.fixture(scope="session")
def synthetic(glmkit_cache):
    from glmkit.sources import synthetic

    return lambda family, shape="tiny": synthetic.path(f"synthetic:{family}:{shape}", quiet=True)


def glm_convert(*args, cwd=None, env=None):
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "glmkit.convert", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)


def logits(path, ids):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=False)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, glmkit_cache):
    """glm4-tiny as glm-serve's tests serve it, made once: GGUF f32, an fp16 IR, and the source itself."""
    from glmkit.convert.gguf import to_gguf
    from glmkit.convert.openvino import to_openvino

    root = tmp_path_factory.mktemp("serve")
    return {"llamacpp": str(to_gguf("glm4-tiny", root / "tiny.gguf", outtype="f32", verify=False, quiet=True)),
            "openvino": str(to_openvino("glm4-tiny", root / "tiny-ov", weight_format="fp16", verify=False,
                                        quiet=True)),
            "transformers": "glm4-tiny"}


def depth_checkpoint(root: Path, layers: int, monkeypatch) -> Path:
    """A bf16 GLM-4 checkpoint of `layers` blocks at one small width: what cost that grows with depth is seen on."""
    from glmkit.sources import synthetic

    shape = f"depth{layers}"
    monkeypatch.setitem(synthetic.SHAPES, shape, dict(hidden_size=256, num_hidden_layers=layers,
                                                      num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                                                      intermediate_size=512, vocab_size=None))
    monkeypatch.setitem(synthetic.DTYPES, shape, "bfloat16")
    out = root / shape
    out.mkdir()
    synthetic.write("glm4", shape, out, quiet=True)
    return out
