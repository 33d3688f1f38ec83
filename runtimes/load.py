"""load(): ask the artifact's kind (runtimes/kinds/) and open it with one set of engine options."""

from __future__ import annotations

from glmkit.glm4.errors import GlmkitError

from . import kinds
from .kinds import kind_of

BACKENDS = ("auto", *kinds.BACKENDS)


def detect_backend(model: str) -> str:
    """The engine that runs `model` (a missing or broken artifact is refused here, in one line)."""
    kind = kind_of(model)
    kind.check(str(model))
    return kind.backend


def load(model: str, backend: str = "auto", device: str = "CPU", **options):
    """Open `model` with one backend.

    Options (None = the engine's default): n_ctx (default: the artifact's context, capped by the memory its KV
    cache would need), threads, prefix_cache (False: every call prefills its whole prompt), dtype (transformers
    weights; OpenVINO inference precision), kv_cache (llama.cpp f16/f32/q8_0; OpenVINO f16/f32/u8), cache_dir
    (OpenVINO compiled-model cache), flash_attn and n_batch (llama.cpp), parallel (N generations at once, batched
    in the engine; stream() may then be called from N threads), prompt_cache_mb (llama.cpp with parallel=N:
    host RAM for evicted sequences' KV, default 1024); speculative="prompt-lookup" or draft=PATH (a smaller model
    of the same tokenizer, in the model's own format), with draft_tokens (proposed per step) and ngram_size
    (runtimes/speculative.py: the output stays the plain run's); other keys are OpenVINO properties such as
    MAX_PROMPT_LEN (NPU)."""
    kind = kind_of(model, backend)
    options = {k: v for k, v in options.items() if v is not None}
    caps = kind.capabilities
    for key in options:
        if key in caps.options:
            continue
        backends = kinds.honouring(key)
        if kind.backend in backends:  # its engine takes it, this kind of artifact does not
            raise GlmkitError(f"{key} is not available for {kind.label}; it takes {', '.join(caps.options)}")
        if backends:
            raise GlmkitError(f"{key} applies to the {' and '.join(backends)} backend(s), not {kind.backend}")
        if not caps.properties:
            raise GlmkitError(f"unknown option {key} for the {kind.backend} backend; it takes "
                              f"{', '.join(caps.options)}")
    base = device.upper().split(".")[0].split(":")[0]
    if base not in caps.devices:
        able = [k.backend for k in kinds.KINDS if base in k.capabilities.devices]
        if not able:
            devices = dict.fromkeys(d for k in kinds.KINDS for d in k.capabilities.devices)
            raise GlmkitError(f"--device {device}: no backend runs on it; choose one of {', '.join(devices)}")
        raise GlmkitError(f"--device {device} needs the {' or '.join(dict.fromkeys(able))} backend; "
                          f"{kind.backend} runs on the {'/'.join(caps.devices)} here")
    kind.check(str(model))
    runtime = kind.open(str(model), device=device, **options)
    runtime.kind, runtime.source = kind, str(model)
    return runtime
