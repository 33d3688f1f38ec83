"""What an artifact computes: next-token logits at every position for given token ids, through its own engine.

The one answer used by conversion verification, glm-bench quality and the tests. Engines run with the settings
that make the figures measure the file's weights rather than the engine's reduced-precision arithmetic: OpenVINO
in f32 inference precision (its CPU default is bf16/f16 where the CPU has it); llama.cpp with an f32 KV cache;
transformers in fp32.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from glmkit.glm4.errors import GlmkitError

from .capabilities import of

# f32 compute: what optimum-intel's OVModelForCausalLM was given when verification ran through it, so figures
# stay comparable with every earlier glmkit.json. No dynamic quantization of activations: the CPU plugin turns it
# on (groups of 32) where the CPU has AVX-512 VNNI or AMX, which moved an int8 IR's KL by 2.4e-4 on one host and
# not on another — the figure must measure the file, on any CPU.
OPENVINO_EXACT = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
OPENVINO_CHUNK = 128


def logits(model: str | Path, ids: list[int], backend: str = "auto", kv_cache: str | None = None) -> np.ndarray:
    """[len(ids), vocab] float32 logits of `model` (an OpenVINO IR dir, a .gguf, or any glm-convert SRC).
    kv_cache: the engine's KV-cache type instead of f32 (llama.cpp f16/q8_0, OpenVINO f16/u8), to measure what a
    smaller cache costs."""
    from .load import detect_backend

    kind = detect_backend(str(model)) if backend == "auto" else backend
    if kv_cache and kv_cache not in of(kind).kv_cache_types:
        raise GlmkitError(f"kv_cache {kv_cache}: the {kind} backend takes "
                          f"{', '.join(of(kind).kv_cache_types) or 'no KV-cache type'}")
    return ENGINES[kind](model, ids, kv_cache)


def image_prompt_logits(path, ids: list[int], pixels) -> np.ndarray:
    """[expanded length, vocab] logits of a GLM-4V IR (runtimes/glm4v.py) for a prompt and its image's pixels
    (None: text alone), in one f32 pass: a conversion's verification, as logits() is for text."""
    from .glm4v import Glm4vIR

    ir = Glm4vIR(path, properties=OPENVINO_EXACT)
    embeds, positions = ir.splice(ids, ir.image_features(pixels) if pixels is not None else None)
    ir.reset()
    return np.array(ir.forward(embeds, positions), dtype=np.float32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float64 (GLM-4's 151,552-way softmax loses precision in float32)."""
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))


def _openvino(path, ids: list[int], kv_cache: str | None = None) -> np.ndarray:
    """One forward pass of the stateful IR with OpenVINO's own runtime (what LLMPipeline runs, minus sampling)."""
    import openvino as ov

    from .openvino import KV_TYPES

    path = Path(path)
    props = dict(OPENVINO_EXACT)
    if kv_cache:
        props["KV_CACHE_PRECISION"] = KV_TYPES[kv_cache]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path / "openvino_model.xml")), "CPU", props)
    request = compiled.create_infer_request()
    request.reset_state()
    names = {name for port in compiled.inputs for name in port.get_names()}
    # One pass attends to the K/V it just computed, never to the cache; with a cache type to measure, the text
    # goes in chunks, so later chunks read earlier ones from the cache as a chat's next turn does.
    step = OPENVINO_CHUNK if kv_cache else len(ids)
    out = []
    for a in range(0, len(ids), step):
        chunk = ids[a:a + step]
        feed = {"input_ids": np.array([chunk], dtype=np.int64),
                "attention_mask": np.ones((1, a + len(chunk)), dtype=np.int64),
                "position_ids": np.arange(a, a + len(chunk), dtype=np.int64)[None],
                "beam_idx": np.zeros(1, dtype=np.int32)}
        request.infer({k: v for k, v in feed.items() if k in names})
        out.append(np.array(request.get_tensor("logits").data[0], dtype=np.float32))
    return np.concatenate(out)


def _llamacpp(path, ids: list[int], kv_cache: str | None = None) -> np.ndarray:
    import llama_cpp

    kv = getattr(llama_cpp, f"GGML_TYPE_{(kv_cache or 'f32').upper()}")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids) + 8, n_batch=len(ids) + 8, logits_all=True,
                          verbose=False, n_threads=os.cpu_count() or 1, type_k=kv, type_v=kv,
                          flash_attn=kv_cache == "q8_0")  # a quantized V cache needs flash attention
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _transformers(model: str | Path, ids: list[int], kv_cache: None = None) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    from glmkit.sources.source import transformers_dir

    path = transformers_dir(str(model))
    net = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, trust_remote_code=False)
    with torch.no_grad():
        out = net(torch.tensor([ids])).logits[0].numpy()
    del net
    return out


# backend → how its own engine computes logits
ENGINES: dict[str, Callable[..., np.ndarray]] = {"openvino": _openvino, "llamacpp": _llamacpp,
                                                  "transformers": _transformers}
