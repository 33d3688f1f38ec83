"""The engine flags every glmkit command that loads a model takes (glm-chat, glm-serve): one definition, mapped
onto load() options."""

from __future__ import annotations

import argparse

from . import kinds


def add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=("auto", *kinds.BACKENDS))
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, NPU or AUTO")
    e = p.add_argument_group("engine")
    e.add_argument("--n-ctx", type=int, help="context length (default: the model's, capped by KV-cache memory)")
    e.add_argument("--threads", type=int, help="CPU threads (default: the engine's choice)")
    e.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                   help="transformers weights / OpenVINO inference precision (transformers default float32)")
    e.add_argument("--kv-cache", choices=("f32", "f16", "q8_0", "u8"),
                   help="KV-cache type: llama.cpp f16 (default), f32, q8_0; OpenVINO f16, f32, u8")
    e.add_argument("--cache-dir", help="OpenVINO compiled-model cache: later starts skip compilation")
    e.add_argument("--no-flash-attn", dest="flash_attn", action="store_false", default=None,
                   help="llama.cpp: plain attention instead of flash attention")
    e.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false", default=None,
                   help="prefill the whole conversation every turn (cold start; for measurements)")
    s = p.add_argument_group("speculative decoding (same output, fewer passes of the model)")
    s.add_argument("--prompt-lookup", dest="speculative", action="store_const", const="prompt-lookup",
                   help="propose the tokens that followed the last words' earlier occurrence in the conversation "
                        "(edits, quotes, code that repeats its input)")
    s.add_argument("--draft", metavar="MODEL", help="propose with a small model of the same tokenizer (a GGUF for a "
                                                   "GGUF, an OpenVINO IR for an IR)")
    s.add_argument("--draft-tokens", type=int, metavar="N", help="tokens proposed per step (default: 8 for prompt "
                                                                 "lookup, 4 for a draft)")
    s.add_argument("--ngram-size", type=int, metavar="N", help="prompt lookup's longest n-gram (default 4)")


def engine_options(args) -> dict:
    """The engine flags the user gave, as load() options (flags left out keep the engine's defaults)."""
    keys = ("n_ctx", "threads", "dtype", "kv_cache", "cache_dir", "flash_attn", "prefix_cache", "speculative", "draft",
            "draft_tokens", "ngram_size")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
