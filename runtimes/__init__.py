"""glmkit.runtimes — one runtime interface over OpenVINO GenAI, llama.cpp and the PyTorch reference.

    from glmkit.runtimes import load, GenerationConfig
    rt = load("glm4-tiny-ov")                # an OpenVINO IR dir, a .gguf, or any glm-convert SRC
    print(rt.generate([{"role": "user", "content": "def fib(n):"}], GenerationConfig(max_new_tokens=64)).text)
"""

from .base import GenerationConfig, GenerationResult, Runtime
from .load import BACKENDS, detect_backend, load

__all__ = ["BACKENDS", "GenerationConfig", "GenerationResult", "Runtime", "detect_backend", "load"]
