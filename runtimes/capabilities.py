"""What each backend can do, as data: callers ask a capability, never compare backend names.

Each Runtime class holds its row (`Runtime.capabilities`); `of(kind)` answers before a model is loaded (glm-serve
decides on batching before it loads).
"""

from __future__ import annotations

from dataclasses import dataclass

from glmkit.glm4.errors import GlmkitError


@dataclass(frozen=True)
class Capabilities:
    constrained: bool = False          # grammar-constrained decoding (response_format, tool_choice required)
    penalties: bool = False            # OpenAI frequency / presence penalties
    kv_cache_types: tuple[str, ...] = ()  # KV-cache element types it runs
    kv_cache_reduced: tuple[str, ...] = ()  # the smaller caches worth measuring (glm-bench kv)
    batching: bool = False             # load(parallel=N): N generations in one engine
    devices: tuple[str, ...] = ("CPU",)
    options: tuple[str, ...] = ()      # load() options it honours
    properties: bool = False           # other load() keys pass through as engine properties (OpenVINO)


SPECULATIVE = ("speculative", "draft", "draft_tokens", "ngram_size")  # load() options of speculative decoding


CAPABILITIES: dict[str, Capabilities] = {
    "openvino": Capabilities(
        constrained=True, penalties=True, kv_cache_types=("f16", "f32", "u8", "q8_0", "bf16"),
        kv_cache_reduced=("f16", "u8"), batching=True, devices=("CPU", "GPU", "NPU", "AUTO"),
        options=("n_ctx", "threads", "prefix_cache", "dtype", "kv_cache", "cache_dir", "parallel", *SPECULATIVE),
        properties=True),
    "llamacpp": Capabilities(
        constrained=True, penalties=True, kv_cache_types=("f16", "f32", "q8_0"), kv_cache_reduced=("f16", "q8_0"),
        batching=True, options=("n_ctx", "threads", "prefix_cache", "kv_cache", "flash_attn", "n_batch", "parallel",
                                "prompt_cache_mb", *SPECULATIVE)),
    "transformers": Capabilities(penalties=True, options=("n_ctx", "threads", "prefix_cache", "dtype")),
}


def of(kind: str) -> Capabilities:
    if kind not in CAPABILITIES:
        raise GlmkitError(f"backend {kind}: choose one of {', '.join(CAPABILITIES)}")
    return CAPABILITIES[kind]


def honouring(option: str) -> tuple[str, ...]:
    """The backends that take a load() option."""
    return tuple(k for k, c in CAPABILITIES.items() if option in c.options)
