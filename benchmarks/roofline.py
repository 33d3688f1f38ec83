"""Decode's memory roofline: every new token reads every weight once, so tokens/s ≤ bandwidth / weight bytes.

The embedding table is the exception — a token reads one row of it — so its bytes are left out, unless the
output projection is tied to it (then the whole table is read as the LM head). The ceiling ignores the KV cache
and activations, so real decode stays below it; % of ceiling says how much of the machine an engine uses.
"""

from __future__ import annotations

import time
from pathlib import Path

# Elementwise ops between a weight Constant and the op that uses it in an OpenVINO IR (decompression subgraphs).
_PASS_THROUGH = {"Convert", "Subtract", "Multiply", "Reshape", "Unsqueeze", "Transpose", "Squeeze"}


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


def _gguf_bytes(path: Path) -> int:
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}
    tied = "output.weight" not in tensors
    return sum(n for name, n in tensors.items() if tied or name != "token_embd.weight")


def _feeds_gather(node, depth: int = 6) -> bool:
    """True when a weight Constant only reaches Gather ops (an embedding lookup), through decompression ops."""
    users = [i.get_node() for o in node.outputs() for i in o.get_target_inputs()]
    if not users or depth == 0:
        return False
    return all(u.get_type_name() == "Gather" or (u.get_type_name() in _PASS_THROUGH and _feeds_gather(u, depth - 1))
               for u in users)


def _openvino_bytes(path: Path) -> int:
    import openvino as ov

    model = ov.Core().read_model(str(path / "openvino_model.xml"))
    total = 0
    for op in model.get_ops():
        if op.get_type_name() != "Constant" or op.get_byte_size() < 4096:  # shapes, axes, scalars
            continue
        if not _feeds_gather(op):
            total += op.get_byte_size()
    return total


def _torch_bytes(model) -> int:
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    embed = model.get_input_embeddings().weight
    return sum(p.numel() * p.element_size() for p in model.parameters() if tied or p is not embed)


# backend → bytes of weights one decode step reads from its artifact
ARTIFACT_BYTES = {"llamacpp": _gguf_bytes, "openvino": _openvino_bytes}


def weight_bytes_per_token(path: str | Path, backend: str, runtime=None) -> int:
    """Bytes of weights one decode step reads, for the artifact a runtime runs."""
    if backend in ARTIFACT_BYTES:
        return ARTIFACT_BYTES[backend](Path(path))
    return _torch_bytes(runtime.model)  # the reference: the weights it holds in memory


def ceiling(weight_bytes: int, bandwidth: float, decode_tps: float) -> dict:
    """The decode ceiling at this bandwidth and how much of it `decode_tps` reaches."""
    ceiling = bandwidth * 1e9 / weight_bytes
    return {"weight_bytes_per_token": weight_bytes, "bandwidth_gbs": bandwidth, "ceiling_tps": ceiling,
            "percent_of_ceiling": 100 * decode_tps / ceiling}
