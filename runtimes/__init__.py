"""glmkit.runtimes — one runtime interface over OpenVINO GenAI, llama.cpp and the PyTorch reference.

    from glmkit.runtimes import load, GenerationConfig
    rt = load("glm4-tiny-ov")                # an OpenVINO IR dir, a .gguf, or any glm-convert SRC
    print(rt.generate([{"role": "user", "content": "def fib(n):"}], GenerationConfig(max_new_tokens=64)).text)

Depends on glmkit.convert's shared layer (families, errors) and, for the transformers backend only, its sources
(source.transformers_dir); never on a converter.
"""

from .base import Runtime
from .load import BACKENDS, detect_backend, load
from .logits import logits
from .types import GenerationConfig, GenerationResult, TextDelta

__all__ = ["BACKENDS", "GenerationConfig", "GenerationResult", "Runtime", "TextDelta", "detect_backend", "load",
           "logits"]
