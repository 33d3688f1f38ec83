"""Evicted conversations' KV in host RAM, so a returning conversation restores its prefix instead of prefilling it
again (llama-server's --cache-ram): when conversations outnumber the engine's sequences, a sequence is given to
another prompt only after what it held is saved here. Bounded in bytes, least recently used out first.
"""

from __future__ import annotations

from collections import OrderedDict

from .kv import shared_prefix

MIN_TOKENS = 32  # shorter prefixes prefill faster than they restore


class PromptCache:
    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.entries: OrderedDict[tuple[int, ...], bytes] = OrderedDict()
        self.used = 0
        self.saved = self.restored = self.restored_tokens = 0

    def worth_saving(self, tokens: list[int]) -> bool:
        return self.limit > 0 and len(tokens) >= MIN_TOKENS and tuple(tokens) not in self.entries

    def put(self, tokens: list[int], data: bytes) -> None:
        if len(data) > self.limit:
            return
        key = tuple(tokens)
        for held in [k for k in self.entries if k[:len(key)] == key or key[:len(k)] == k]:  # one per conversation
            self.used -= len(self.entries.pop(held))
        self.entries[key] = data
        self.used += len(data)
        self.saved += 1
        while self.used > self.limit:
            self.used -= len(self.entries.popitem(last=False)[1])

    def best(self, ids: list[int], better_than: int) -> tuple[tuple[int, ...], bytes, int] | None:
        """The entry sharing the longest prefix with `ids`, if longer than `better_than` and worth restoring."""
        found, n = None, max(better_than, MIN_TOKENS - 1)
        for key in self.entries:
            k = shared_prefix(list(key), ids)
            if k > n:
                found, n = key, k
        if found is None:
            return None
        data = self.entries.pop(found)
        self.used -= len(data)
        return found, data, n

    def stats(self) -> dict:
        return {"entries": len(self.entries), "bytes": self.used, "limit_bytes": self.limit, "saved": self.saved,
                "restored": self.restored, "restored_tokens": self.restored_tokens}
