"""GenerationConfig's sampling over one row of logits, in numpy, for a backend glmkit drives token by token itself
(GLM-4V's three IRs). The order is the one GenerationConfig documents and the other backends run: repetition
penalty (transformers' rule, over prompt and answer), OpenAI's frequency and presence penalties (the answer), then
greedy argmax, or temperature → top-k → top-p → a draw from a seeded generator.
"""

from __future__ import annotations

import numpy as np

from .types import GenerationConfig


class Sampler:
    def __init__(self, config: GenerationConfig, prompt_ids: list[int]):
        self.config = config
        self.seen = list(prompt_ids)
        self.answer: list[int] = []
        self.rng = np.random.default_rng(config.seed)

    def accept(self, token: int) -> None:
        self.seen.append(token)
        self.answer.append(token)

    def __call__(self, logits: np.ndarray) -> int:
        c = self.config
        x = np.array(logits, dtype=np.float64)
        if c.repetition_penalty != 1.0:
            ids = np.unique(self.seen)
            x[ids] = np.where(x[ids] > 0, x[ids] / c.repetition_penalty, x[ids] * c.repetition_penalty)
        if (c.frequency_penalty or c.presence_penalty) and self.answer:
            ids, counts = np.unique(self.answer, return_counts=True)
            x[ids] -= c.frequency_penalty * counts + c.presence_penalty
        if c.greedy:
            return int(x.argmax())
        x = x / c.temperature
        if c.top_k and c.top_k < x.size:
            kth = np.partition(x, -c.top_k)[-c.top_k]
            x[x < kth] = -np.inf
        p = np.exp(x - x.max())
        p /= p.sum()
        if c.top_p < 1.0:  # the smallest set of most likely tokens whose mass reaches top_p
            order = np.argsort(-p, kind="stable")
            mass = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(mass, c.top_p)) + 1]
            q = np.zeros_like(p)
            q[keep] = p[keep]
            p = q / q.sum()
        return int(self.rng.choice(p.size, p=p))
