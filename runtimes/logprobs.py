"""Log-probabilities from logits: what verification, glm-bench quality and glm-serve's `logprobs` read."""

from __future__ import annotations

import numpy as np

from .types import TokenLogprob


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities in float64 (GLM-4's 151,552-way softmax loses precision in float32)."""
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))


def token_logprobs(logits: np.ndarray, ids: list[int], top: int = 0) -> list[TokenLogprob | None]:
    """For each position of `ids`, its logprob under the row before it and the `top` likeliest tokens there
    (logits[i] predicts ids[i + 1]); None at position 0."""
    rows = log_softmax(logits)
    out: list[TokenLogprob | None] = [None]
    for i in range(1, len(ids)):
        row = rows[i - 1]
        best = np.argpartition(-row, top)[:top] if top else np.array([], dtype=np.int64)
        best = best[np.argsort(-row[best], kind="stable")]
        out.append(TokenLogprob(ids[i], float(row[ids[i]]), tuple((int(t), float(row[t])) for t in best)))
    return out
