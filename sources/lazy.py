"""Synthetic checkpoints whose tensors are generated when read: GLM-4-32B's shape costs no disk.

The directory holds what a checkpoint holds besides weights (config.json, tokenizer, chat template) and a manifest
saying `lazy_weights` (checkpoint.LazyCheckpoint opens it); each tensor is drawn from seeded generators, one per
block of rows, so any rows of it can be made alone (an embedding lookup reads 8,000 rows of 151,552, not the
table). Streaming consumers — GGUF writing, the importance matrix, block-wise verification — read it as they read
safetensors; tools that open files themselves (transformers, optimum-intel) cannot, and are told so.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor

from glmkit.glm4.errors import GlmkitError

ROWS_PER_SEED = 1024  # rows drawn from one generator: the unit a partial read costs


def seeded_rows(name: str, shape: tuple[int, ...], seed: int, dtype, rows: tuple[int, int] | None = None):
    """Rows [a, b) of the seeded tensor `name` (all rows when None), the same whichever way they are read."""
    import torch

    a, b = rows or (0, shape[0])
    width = 1
    for d in shape[1:]:
        width *= d
    out = torch.empty((b - a, width), dtype=dtype)
    base = (seed * 1_000_003 + zlib.crc32(name.encode())) & 0x7FFF_FFFF
    if name.endswith("norm.weight"):
        std, mean = 0.1, 1.0
    else:
        std, mean = (0.02 if "bias" in name else (width if len(shape) == 2 and "embed" not in name else 1) ** -0.5), 0.0
    def fill(block: int) -> None:
        lo, hi = block * ROWS_PER_SEED, min((block + 1) * ROWS_PER_SEED, shape[0])
        g = torch.Generator().manual_seed((base * 7919 + block) & 0x7FFF_FFFF)
        chunk = torch.randn((hi - lo, width), generator=g).mul_(std).add_(mean)
        s, e = max(lo, a), min(hi, b)
        out[s - a:e - a].copy_(chunk[s - lo:e - lo])

    blocks = range(a // ROWS_PER_SEED, -(-b // ROWS_PER_SEED))
    if len(blocks) == 1:
        fill(blocks[0])
    else:  # a seeded generator runs on one core; blocks are independent, so every core draws
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(fill, blocks))
    return out.reshape((b - a, *shape[1:]))


def refuse_files(ckpt, what: str) -> None:
    """A clear error where a tool must open weight files itself (checkpoint.LazyCheckpoint has none)."""
    if getattr(ckpt, "generated", False):
        raise GlmkitError(f"{ckpt.path}: this synthetic checkpoint's weights are generated when read, and {what} "
                          "opens weight files itself; convert it --to gguf, or use a smaller synthetic shape")
