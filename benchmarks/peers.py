"""The raw engines, timed beside glmkit: what openvino-genai and llama.cpp do with no glmkit in between.

Raw means the engine's own API with nothing but a timestamp per token: LLMPipeline.generate with a callback
streamer; llama.cpp's C API (llama_decode and its greedy sampler) through llama-cpp-python's ctypes bindings.
glm-bench interleaves raw and glmkit repetitions on the same loaded model, so glmkit / raw is glmkit's overhead.
"""

from __future__ import annotations

import time


def _figures(start: float, stamps: list[float], prompt_tokens: int) -> dict:
    ttft = stamps[0] - start
    return {"ttft_ms": ttft * 1000, "prefill_tps": prompt_tokens / ttft,
            "decode_tps": (len(stamps) - 1) / (stamps[-1] - stamps[0])}


def raw_openvino(runtime, ids: list[int], gen: int) -> dict:
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    from glmkit.runtimes import GenerationConfig

    stamps: list[float] = []

    class Stamp(ov_genai.StreamerBase):
        def write(self, token):
            stamps.append(time.perf_counter())
            return ov_genai.StreamingStatus.RUNNING

        def end(self):
            pass

    cfg = runtime._gen_config(GenerationConfig(max_new_tokens=gen, ignore_eos=True))
    start = time.perf_counter()
    runtime.pipe.generate(ov.Tensor(np.array([ids], dtype=np.int64)), cfg, Stamp())
    return _figures(start, stamps, len(ids))


def raw_llamacpp(runtime, ids: list[int], gen: int) -> dict:
    import llama_cpp as lc

    ctx = runtime.llm._ctx.ctx
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    sampler = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(sampler, lc.llama_sampler_init_greedy())
    start = time.perf_counter()
    n_batch = runtime.llm.n_batch
    for i in range(0, len(ids), n_batch):
        chunk = ids[i:i + n_batch]
        lc.llama_decode(ctx, lc.llama_batch_get_one((lc.llama_token * len(chunk))(*chunk), len(chunk)))
    stamps: list[float] = []
    for _ in range(gen):
        tok = lc.llama_sampler_sample(sampler, ctx, -1)
        stamps.append(time.perf_counter())
        lc.llama_decode(ctx, lc.llama_batch_get_one((lc.llama_token * 1)(tok), 1))
    lc.llama_sampler_free(sampler)
    return _figures(start, stamps, len(ids))


RAW = {"openvino": raw_openvino, "llamacpp": raw_llamacpp}
