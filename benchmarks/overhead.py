"""glmkit's runtime overhead: decode tokens/s through glmkit vs the raw engine, same prompts, same clock.

    python -m glmkit.benchmarks.overhead OV_DIR_OR_GGUF [--gen 64] [--prompt-tokens 128] [--reps 5]

Raw means the engine's own streaming API with nothing but a timestamp per token (LLMPipeline.generate with a
callback streamer; Llama.generate). Repetitions alternate raw and glmkit and each uses a different prompt, since
both engines reuse the KV cache of a repeated prompt.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from glmkit.runtimes import GenerationConfig, load


def prompts(runtime, n: int, prompt_tokens: int) -> list[list[int]]:
    """n different prompts of exactly `prompt_tokens` tokens, cut from glm4-tiny's held-out text."""
    from glmkit.convert.embedded import held_out_text

    ids = runtime.tokenizer.encode(held_out_text())
    return [ids[i * prompt_tokens:(i + 1) * prompt_tokens] for i in range(n)]


def _decode_tps(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def raw_openvino(runtime, ids: list[int], gen: int) -> float:
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    stamps: list[float] = []

    class Stamp(ov_genai.StreamerBase):
        def write(self, token):
            stamps.append(time.perf_counter())
            return ov_genai.StreamingStatus.RUNNING

        def end(self):
            pass

    cfg = runtime._gen_config(GenerationConfig(max_new_tokens=gen, ignore_eos=True))
    runtime.pipe.generate(ov.Tensor(np.array([ids], dtype=np.int64)), cfg, Stamp())
    return _decode_tps(stamps)


def raw_llamacpp(runtime, ids: list[int], gen: int) -> float:
    """llama.cpp's C API directly: llama_decode and its greedy sampler, no Python per-token work beyond ctypes."""
    import llama_cpp as lc

    ctx = runtime.llm._ctx.ctx
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    sampler = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    lc.llama_sampler_chain_add(sampler, lc.llama_sampler_init_greedy())
    arr = (lc.llama_token * len(ids))(*ids)
    lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(ids)))
    stamps: list[float] = []
    for _ in range(gen):
        tok = lc.llama_sampler_sample(sampler, ctx, -1)
        stamps.append(time.perf_counter())
        one = (lc.llama_token * 1)(tok)
        lc.llama_decode(ctx, lc.llama_batch_get_one(one, 1))
    lc.llama_sampler_free(sampler)
    return _decode_tps(stamps)


RAW = {"openvino": raw_openvino, "llamacpp": raw_llamacpp}


def measure(model: str, gen: int = 64, prompt_tokens: int = 128, reps: int = 5, **options) -> dict:
    runtime = load(model, **options)
    raw_fn = RAW.get(runtime.backend)
    if raw_fn is None:
        raise SystemExit(f"no raw baseline for backend {runtime.backend}")
    ps = prompts(runtime, 2 * reps + 2, prompt_tokens)
    cfg = GenerationConfig(max_new_tokens=gen, ignore_eos=True)
    raw_fn(runtime, ps[-1], 8)  # warm-up: compile, allocate
    runtime.generate(runtime.tokenizer.decode(ps[-2]), GenerationConfig(max_new_tokens=8, ignore_eos=True))
    raw, ours = [], []
    for r in range(reps):
        raw.append(raw_fn(runtime, ps[2 * r], gen))
        res = runtime.generate(runtime.tokenizer.decode(ps[2 * r + 1]), cfg)
        ours.append(res.decode_tps)
    runtime.close()
    out = {"model": model, "backend": runtime.backend, "gen": gen, "prompt_tokens": prompt_tokens, "reps": reps,
           "raw_decode_tps": statistics.median(raw), "glmkit_decode_tps": statistics.median(ours),
           "raw_all": raw, "glmkit_all": ours}
    out["ratio"] = out["glmkit_decode_tps"] / out["raw_decode_tps"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    r = measure(args.model, args.gen, args.prompt_tokens, args.reps)
    print(json.dumps(r, indent=2))
    print(f"{r['backend']}: glmkit {r['glmkit_decode_tps']:.1f} t/s vs raw {r['raw_decode_tps']:.1f} t/s "
          f"= {r['ratio']:.1%}")


if __name__ == "__main__":
    main()
