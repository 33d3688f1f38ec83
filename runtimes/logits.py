"""What an artifact computes: next-token logits at every position for given token ids, through its own engine.

The one answer used by conversion verification, glm-bench quality and the tests; each artifact kind
(runtimes/kinds/) computes it. Engines run with the settings that make the figures measure the file's weights
rather than the engine's reduced-precision arithmetic: OpenVINO in f32 inference precision (its CPU default is
bf16/f16 where the CPU has it); llama.cpp with an f32 KV cache; transformers in fp32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glmkit.glm4.errors import GlmkitError

from .kinds import kind_of
from .logprobs import log_softmax

__all__ = ["image_prompt_logits", "log_softmax", "logits"]


def logits(model: str | Path, ids: list[int], backend: str = "auto", kv_cache: str | None = None) -> np.ndarray:
    """[len(ids), vocab] float32 logits of `model` (an OpenVINO IR dir, a .gguf, or any glm-convert SRC).
    kv_cache: the engine's KV-cache type instead of f32 (llama.cpp f16/q8_0, OpenVINO f16/u8), to measure what a
    smaller cache costs."""
    kind = kind_of(model, backend)
    kind.check(str(model))
    if kv_cache and kv_cache not in kind.capabilities.kv_cache_types:
        raise GlmkitError(f"kv_cache {kv_cache}: the {kind.backend} backend takes "
                          f"{', '.join(kind.capabilities.kv_cache_types) or 'no KV-cache type'}")
    return kind.logits(model, ids, kv_cache)


def image_prompt_logits(path, ids: list[int], pixels) -> np.ndarray:
    """[expanded length, vocab] logits of a prompt and its image's pixels (None: text alone), in one f32 pass:
    a GLM-4V conversion's verification, as logits() is for text."""
    kind = kind_of(path)
    kind.check(str(path))
    return kind.logits(path, ids, pixels=pixels)


