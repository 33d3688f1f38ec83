"""How many tokens a runtime holds: the artifact's own context unless asked otherwise, capped by the memory its
KV cache would need."""

from __future__ import annotations

import sys

KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "u8": 1.0, "i8": 1.0}
KV_SHARE = 0.5  # the KV cache may take at most this share of available memory by default


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, kv_type: str = "f16") -> float:
    """K and V for one token across all layers."""
    return 2 * layers * kv_heads * head_dim * KV_BYTES.get(kv_type, 2.0)


def default_context(native: int, requested: int | None, kv_type: str, layers: int, kv_heads: int,
                    head_dim: int, sequences: int = 1) -> int:
    """`requested` when given (never beyond `native`); else `native`, capped so the KV cache (of `sequences`
    generations at once) fits in half of the available memory, saying so on stderr when it caps."""
    if requested:
        return min(int(requested), int(native))
    from .memory import available_mb

    per_token = kv_bytes_per_token(layers, kv_heads, head_dim, kv_type) * sequences
    fits = int(available_mb() * 2**20 * KV_SHARE / per_token) if per_token else native
    if fits >= native:
        return int(native)
    n = max(512, fits // 256 * 256)
    print(f"glmkit: context capped at {n} tokens: the model's {native} would need a "
          f"{native * per_token / 2**30:.1f} GB KV cache ({kv_type}) and {available_mb() / 1024:.1f} GB is available; "
          "pass n_ctx (--n-ctx) to choose", file=sys.stderr)
    return n
