"""The raw engines, timed beside glmkit: what openvino-genai and llama.cpp do with no glmkit in between.

Raw means the engine's own API with nothing but a timestamp per token; each artifact kind says what its
engine's is (`ArtifactKind.raw_stamps`: LLMPipeline.generate with a callback streamer; llama.cpp's C API,
llama_decode and its greedy sampler). glm-bench interleaves raw and glmkit repetitions on the same loaded model,
so glmkit / raw is glmkit's overhead.
"""

from __future__ import annotations

from collections.abc import Callable


def _figures(start: float, stamps: list[float], prompt_tokens: int) -> dict:
    ttft = stamps[0] - start
    return {"ttft_ms": ttft * 1000, "prefill_tps": prompt_tokens / ttft,
            "decode_tps": (len(stamps) - 1) / (stamps[-1] - stamps[0])}


def raw_runner(runtime) -> Callable[[object, list[int], int], dict] | None:
    """raw(runtime, ids, gen) → the raw engine's figures, or None where the runtime's kind has no raw path."""
    stamps = getattr(runtime.kind, "raw_stamps", None)
    if stamps is None:
        return None

    def raw(rt, ids: list[int], gen: int) -> dict:
        s = stamps(rt, ids, gen)
        return _figures(s[0], s[1:], len(ids))

    return raw
