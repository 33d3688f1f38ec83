"""What an artifact kind can do, as data: callers ask a capability, never compare backend or kind names.

Each kind (runtimes/kinds/) declares its row, and its Runtime class carries the same row, so a capability is
known before a model is loaded (glm-serve decides on batching before it loads) and after.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    images: bool = False               # a prompt may carry an image (GLM-4V)


SPECULATIVE = ("speculative", "draft", "draft_tokens", "ngram_size")  # load() options of speculative decoding
