"""load(): pick the backend from what the model is, and open it with one set of engine options."""

from __future__ import annotations

from pathlib import Path

from glmkit.glm4.errors import REFERENCE_STACK, GlmkitError, require

from . import capabilities

BACKENDS = ("auto", *capabilities.CAPABILITIES)


def detect_backend(model: str) -> str:
    p = Path(str(model)).expanduser()
    if p.is_file():
        with p.open("rb") as f:  # the magic only: a 9B GGUF is 18 GB
            if f.read(4) == b"GGUF":
                return "llamacpp"
    if p.suffix == ".gguf" and not p.exists():
        raise GlmkitError(f"{model}: no such GGUF file; convert one with glm-convert SRC --to gguf")
    if p.suffix == ".gguf":
        raise GlmkitError(f"{model}: not a GGUF file (no GGUF magic); re-create it with glm-convert --to gguf")
    if p.is_dir() and ((p / "openvino_model.xml").is_file() or (p / "openvino_language_model.xml").is_file()):
        return "openvino"  # a text IR, or GLM-4V's three
    return "transformers"


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
    if backend not in BACKENDS:
        raise GlmkitError(f"backend {backend}: choose one of {', '.join(BACKENDS)}")
    kind = detect_backend(model) if backend == "auto" else backend
    options = {k: v for k, v in options.items() if v is not None}
    caps = capabilities.of(kind)
    for key in options:
        if key in caps.options:
            continue
        if backends := capabilities.honouring(key):
            raise GlmkitError(f"{key} applies to the {' and '.join(backends)} backend(s), not {kind}")
        if not caps.properties:
            raise GlmkitError(f"unknown option {key} for the {kind} backend; it takes {', '.join(caps.options)}")
    base = device.upper().split(".")[0].split(":")[0]
    if base not in caps.devices:
        able = [k for k, c in capabilities.CAPABILITIES.items() if base in c.devices]
        if not able:
            devices = dict.fromkeys(d for c in capabilities.CAPABILITIES.values() for d in c.devices)
            raise GlmkitError(f"--device {device}: no backend runs on it; choose one of {', '.join(devices)}")
        raise GlmkitError(f"--device {device} needs the {' or '.join(able)} backend; {kind} runs on the "
                          f"{'/'.join(caps.devices)} here")
    name = str(model)
    if kind == "openvino" and (Path(model) / "openvino_language_model.xml").is_file():  # GLM-4V's three IRs
        from .glm4v import OPTIONS, Glm4vRuntime

        for key in options:
            if key not in OPTIONS:
                raise GlmkitError(f"{key} is not available for a GLM-4V model; it takes {', '.join(OPTIONS)}")
        return Glm4vRuntime(model, device=device, model_name=name, **options)
    if kind == "openvino":
        from .openvino import OpenVINORuntime

        if not (Path(model) / "openvino_model.xml").is_file():
            raise GlmkitError(f"{model}: no openvino_model.xml; convert it with glm-convert {model} --to openvino")
        return OpenVINORuntime(model, device=device, model_name=name, **options)
    if kind == "llamacpp":
        from .llamacpp import LlamaCppRuntime

        if not Path(model).is_file():
            raise GlmkitError(f"{model}: no such GGUF file; convert one with glm-convert SRC --to gguf")
        return LlamaCppRuntime(model, model_name=name, **options)
    require(REFERENCE_STACK, f"{model}: running a checkpoint (not an OpenVINO IR or a GGUF)")
    from glmkit.sources.source import transformers_dir

    from .reference import TransformersRuntime

    return TransformersRuntime(transformers_dir(model), model_name=name, **options)
