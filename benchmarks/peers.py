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


def stamps_openvino(runtime, ids: list[int], gen: int) -> list[float]:
    """[start, then one wall-clock stamp per generated token] from LLMPipeline.generate's streamer."""
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

    cfg = runtime.generation_config(GenerationConfig(max_new_tokens=gen, ignore_eos=True))
    start = time.perf_counter()
    runtime.pipe.generate(ov.Tensor(np.array([ids], dtype=np.int64)), cfg, Stamp())
    runtime.reset_cache()  # the pipeline's KV now holds this prompt, not what glmkit's runtime last sent
    return [start] + stamps


def stamps_llamacpp(runtime, ids: list[int], gen: int) -> list[float]:
    """[start, then one stamp per token] from llama.cpp's C API: llama_decode and the greedy sampler."""
    import llama_cpp as lc

    ctx = runtime.ctx
    runtime.reset_cache()  # a cold start, as glmkit's side of the pair has (every prompt differs)
    sampler = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(sampler, lc.llama_sampler_init_greedy())
    def decode(tokens: list[int]) -> None:
        arr = (lc.llama_token * len(tokens))(*tokens)  # held in a name: the batch only points at it
        if lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(tokens))) != 0:
            raise RuntimeError(f"llama_decode failed on {len(tokens)} tokens")

    start = time.perf_counter()
    n_batch = runtime.llm.n_batch
    for i in range(0, len(ids), n_batch):
        decode(ids[i:i + n_batch])
    stamps: list[float] = []
    for n in range(gen):
        tok = lc.llama_sampler_sample(sampler, ctx, -1)
        stamps.append(time.perf_counter())
        if n + 1 < gen:
            decode([tok])
    lc.llama_sampler_free(sampler)
    runtime.reset_cache()
    return [start] + stamps


def raw_openvino(runtime, ids: list[int], gen: int) -> dict:
    s = stamps_openvino(runtime, ids, gen)
    return _figures(s[0], s[1:], len(ids))


def raw_llamacpp(runtime, ids: list[int], gen: int) -> dict:
    s = stamps_llamacpp(runtime, ids, gen)
    return _figures(s[0], s[1:], len(ids))


RAW = {"openvino": raw_openvino, "llamacpp": raw_llamacpp}
RAW_STAMPS = {"openvino": lambda rt, ids, n: stamps_openvino(rt, ids, n)[1:],
              "llamacpp": lambda rt, ids, n: stamps_llamacpp(rt, ids, n)[1:]}
