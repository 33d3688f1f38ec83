"""Decode's memory roofline: every new token reads every weight once, so tokens/s ≤ bandwidth / weight bytes.

The embedding table is the exception — a token reads one row of it — so its bytes are left out, unless the
output projection is tied to it (then the whole table is read as the LM head). The ceiling ignores the KV cache
and activations, so real decode stays below it; % of ceiling says how much of the machine an engine uses.
"""

from __future__ import annotations

import time
from pathlib import Path


def bandwidth_gbs(threads: int | None = None, size_mb: int = 512, reps: int = 5) -> float:
    """Memory read bandwidth at `threads` threads: best of `reps` reductions over a buffer far larger than cache."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        x = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32)
        x.sum()  # touch every page before timing
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            x.sum()
            best = min(best, time.perf_counter() - t)
        return x.numel() * 4 / best / 1e9
    finally:
        torch.set_num_threads(before)


def weight_bytes_per_token(path: str | Path, backend: str = "auto", runtime=None) -> int:
    """Bytes of weights one decode step reads, as the artifact's kind counts them (runtimes/kinds/); a
    transformers reference counts the weights its loaded `runtime` holds."""
    from glmkit.runtimes.kinds import kind_of

    kind = runtime.kind if runtime is not None and runtime.kind is not None else kind_of(path, backend)
    return kind.weight_bytes(path, runtime)


def ceiling(weight_bytes: int, bandwidth: float, decode_tps: float) -> dict:
    """The decode ceiling at this bandwidth and how much of it `decode_tps` reaches."""
    ceiling = bandwidth * 1e9 / weight_bytes
    return {"weight_bytes_per_token": weight_bytes, "bandwidth_gbs": bandwidth, "ceiling_tps": ceiling,
            "percent_of_ceiling": 100 * decode_tps / ceiling}
