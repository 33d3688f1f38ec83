"""What an artifact computes: next-token logits at every position for given token ids, through its own engine.

The one answer used by conversion verification, glm-bench quality and the tests. Engines run with the settings
that make the figures measure the file's weights rather than the engine's reduced-precision arithmetic: OpenVINO
in f32 inference precision (its CPU default is bf16/f16 where the CPU has it); llama.cpp with an f32 KV cache;
transformers in fp32.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# f32 compute: what optimum-intel's OVModelForCausalLM was given when verification ran through it, so figures
# stay comparable with every earlier glmkit.json.
OPENVINO_EXACT = {"INFERENCE_PRECISION_HINT": "f32"}


def logits(model: str | Path, ids: list[int], backend: str = "auto") -> np.ndarray:
    """[len(ids), vocab] float32 logits of `model` (an OpenVINO IR dir, a .gguf, or any glm-convert SRC)."""
    from .load import detect_backend

    kind = detect_backend(str(model)) if backend == "auto" else backend
    if kind == "openvino":
        return _openvino(Path(model), ids)
    if kind == "llamacpp":
        return _llamacpp(Path(model), ids)
    return _transformers(model, ids)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float64 (GLM-4's 151,552-way softmax loses precision in float32)."""
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))


def _openvino(path: Path, ids: list[int]) -> np.ndarray:
    """One forward pass of the stateful IR with OpenVINO's own runtime (what LLMPipeline runs, minus sampling)."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path / "openvino_model.xml")), "CPU", OPENVINO_EXACT)
    request = compiled.create_infer_request()
    request.reset_state()
    n = len(ids)
    feed = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None], "beam_idx": np.zeros(1, dtype=np.int32)}
    names = {name for port in compiled.inputs for name in port.get_names()}
    request.infer({k: v for k, v in feed.items() if k in names})
    return np.array(request.get_tensor("logits").data[0], dtype=np.float32)


def _llamacpp(path: Path, ids: list[int]) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids) + 8, n_batch=len(ids) + 8, logits_all=True,
                          verbose=False, n_threads=os.cpu_count() or 1, type_k=llama_cpp.GGML_TYPE_F32,
                          type_v=llama_cpp.GGML_TYPE_F32)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _transformers(model: str | Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    from glmkit.convert.source import transformers_dir

    path = transformers_dir(str(model))
    net = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, trust_remote_code=False)
    with torch.no_grad():
        out = net(torch.tensor([ids])).logits[0].numpy()
    del net
    return out
