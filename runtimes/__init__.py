"""glmkit.runtimes — one runtime interface over OpenVINO GenAI, llama.cpp and the PyTorch reference.

    from glmkit.runtimes import load, GenerationConfig
    rt = load("glm4-tiny-ov")                # an OpenVINO IR dir, a .gguf, or any glm-convert SRC
    print(rt.generate([{"role": "user", "content": "def fib(n):"}], GenerationConfig(max_new_tokens=64)).text)

Takes GLM-4's facts and chat format from glmkit.glm4 and, for the transformers backend only, a source from
glmkit.convert (source.transformers_dir); never a converter.
"""

from .base import Runtime
from .load import BACKENDS, detect_backend, load
from .logits import logits
from .types import GenerationConfig, GenerationResult, TextDelta

__all__ = ["BACKENDS", "GenerationConfig", "GenerationResult", "Runtime", "TextDelta", "detect_backend", "load",
           "logits"]
