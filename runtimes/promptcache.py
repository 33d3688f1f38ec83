"""Evicted conversations' KV in host RAM, so a returning conversation restores its prefix instead of prefilling it
again (llama-server's --cache-ram): when conversations outnumber the engine's sequences, a sequence is given to
another prompt only after what it held is saved here. Bounded in bytes, least recently used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .kv import shared_prefix

MIN_TOKENS = 32  # shorter prefixes prefill faster than they restore


class PromptCache:
    """`size(data)`: the bytes an entry holds (llama.cpp's state is bytes; GLM-4V's, OpenVINO's state tensors)."""

    def __init__(self, limit_bytes: int, size: Callable[[Any], int] = len):
        self.limit = limit_bytes
        self.size = size
        self.entries: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.used = 0
        self.saved = self.restored = self.restored_tokens = 0

    def worth_saving(self, tokens: list[int], length: int | None = None) -> bool:
        """`length`: the positions the state holds, where they are not its tokens (GLM-4V's image)."""
        return (self.limit > 0 and (len(tokens) if length is None else length) >= MIN_TOKENS
                and tuple(tokens) not in self.entries)

    def put(self, tokens: list[int], data) -> None:
        if self.size(data) > self.limit:
            return
        key = tuple(tokens)
        for held in [k for k in self.entries if k[:len(key)] == key or key[:len(k)] == k]:  # one per conversation
            self.used -= self.size(self.entries.pop(held))
        self.entries[key] = data
        self.used += self.size(data)
        self.saved += 1
        while self.used > self.limit:
            self.used -= self.size(self.entries.popitem(last=False)[1])

    def best(self, ids: list[int], better_than: int,
             least: int = MIN_TOKENS) -> tuple[tuple[int, ...], Any, int] | None:
        """The entry sharing the longest prefix with `ids`, if longer than `better_than` and at least `least`."""
        found, n = None, max(better_than, least - 1)
        for key in self.entries:
            k = shared_prefix(list(key), ids)
            if k > n:
                found, n = key, k
        if found is None:
            return None
        data = self.entries.pop(found)
        self.used -= self.size(data)
        return found, data, n

    def stats(self) -> dict:
        return {"entries": len(self.entries), "bytes": self.used, "limit_bytes": self.limit, "saved": self.saved,
                "restored": self.restored, "restored_tokens": self.restored_tokens}
