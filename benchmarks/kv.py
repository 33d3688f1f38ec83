"""glm-bench kv: what a smaller KV cache costs at length — bytes per 1K tokens, and how far the logits move.

For each cache type the file's own engine computes the logits of a long held-out text (runtimes.logits with
kv_cache=…); they are compared position by position with the same engine on an f32 cache: top-1 agreement and
mean KL per band of positions, since a quantized cache's error grows with the number of cached tokens read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError
from glmkit.runtimes import logits
from glmkit.runtimes.context import kv_bytes_per_token
from glmkit.runtimes.kinds import kind_of
from glmkit.runtimes.logits import log_softmax


def _ids_and_shape(model: str, length: int) -> tuple[list[int], tuple[int, int, int]]:
    """`length` tokens of held-out text, and the KV shape (layers, KV heads, head dim) the engine caches."""
    from glmkit.runtimes import load
    from glmkit.sources.embedded import held_out_text

    with load(model, n_ctx=min(length + 64, 4096)) as rt:
        ids = rt.tokenizer.encode(families.PROMPT_PREFIX + held_out_text())
        if length > rt.context_length:
            raise GlmkitError(f"--length {length}: the model's context is {rt.context_length} tokens")
        shape = rt.kv_shape
    return (ids * (length // len(ids) + 1))[:length], shape


def run(model: str, length: int = 2048, kv_types: tuple[str, ...] | None = None, bands: int = 4) -> dict:
    kind = kind_of(model)
    kind.check(model)
    reduced = kind.capabilities.kv_cache_reduced
    if not reduced:
        raise GlmkitError(f"{model}: glm-bench kv takes an OpenVINO IR dir or a .gguf file")
    if length < bands * 16:
        raise GlmkitError(f"--length {length}: give at least {bands * 16} tokens")
    types = tuple(kv_types or reduced)
    ids, shape = _ids_and_shape(model, length)
    ref = log_softmax(logits(model, ids, kv_cache="f32"))
    edges = np.linspace(0, length, bands + 1).astype(int)
    rows = []
    for kv in types:
        got = log_softmax(logits(model, ids, kv_cache=kv))
        kl = (np.exp(ref) * (ref - got)).sum(-1)
        top1 = ref.argmax(-1) == got.argmax(-1)
        rows.append({"kv_cache": kv, "kv_bytes_per_1k_tokens": int(kv_bytes_per_token(*shape, kv) * 1024),
                     "bands": [{"positions": [int(a), int(b)], "top1_agreement": float(top1[a:b].mean()),
                                "mean_kl": float(kl[a:b].mean())} for a, b in zip(edges, edges[1:])]})
        del got
    return {"model": str(model), "backend": kind.backend, "length": length, "reference": "f32 cache, same engine",
            "f32_bytes_per_1k_tokens": int(kv_bytes_per_token(*shape, "f32") * 1024), "caches": rows}


def to_markdown(data: dict) -> str:
    bands = data["caches"][0]["bands"] if data["caches"] else []
    head = " | ".join(f"KL {b['positions'][0]}–{b['positions'][1]}" for b in bands)
    lines = [f"## glm-bench kv · {Path(data['model']).name} ({data['backend']})", "",
             f"{data['length']} tokens of held-out text; each cache against the {data['reference']}.", "",
             f"| KV cache | KiB per 1K tokens | {head} | top-1 last band |",
             "|---|---|" + "---|" * len(bands) + "---|"]
    for c in data["caches"]:
        kls = " | ".join(f"{b['mean_kl']:.2e}" for b in c["bands"])
        lines.append(f"| {c['kv_cache']} | {c['kv_bytes_per_1k_tokens'] / 1024:.0f} | {kls} | "
                     f"{c['bands'][-1]['top1_agreement']:.2%} |")
    return "\n".join(lines) + "\n"


def plot(data: dict, path) -> object:
    """Mean KL against position band, one line per cache type."""
    from .plots import _pyplot, _save, available

    if not available():
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in data["caches"]:
        ax.plot([sum(b["positions"]) / 2 for b in c["bands"]], [max(b["mean_kl"], 1e-12) for b in c["bands"]],
                marker="o", label=f"{c['kv_cache']} ({c['kv_bytes_per_1k_tokens'] / 1024:.0f} KiB / 1K tokens)")
    ax.set_yscale("log")
    ax.set_xlabel("position")
    ax.set_ylabel("mean KL vs f32 cache")
    ax.set_title(f"glm-bench kv · {Path(data['model']).name}", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)
