"""What an engine's KV cache holds, and the one rule every engine reuses it by.

An engine keeps the keys and values of its last prompt and answer. The next prompt reuses the longest prefix it
shares with them — never its own last token, whose logits choose the first new token — and the rest is trimmed
from the cache. When nothing is shared, when the engine cannot trim, or when a call fails, the cache is dropped
whole: a state that may not hold what the bookkeeping says is never reused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def shared_prefix(held: list[int], prompt_ids: list[int]) -> int:
    """How many of the held tokens a prompt starts with, never all of the prompt (its last token is decoded
    again, since its logits choose the first new token)."""
    n = 0
    for a, b in zip(held, prompt_ids[:-1]):
        if a != b:
            break
        n += 1
    return n


class HeldKV:
    """The token ids an engine's cache holds, in order, and `tag`: anything else the state depends on (GLM-4V: the
    image whose embeddings it holds). `clear()` empties the engine's cache; `trim(length) -> bool` keeps its first
    `length` positions (None: the engine trims by itself when the next prompt comes)."""

    def __init__(self, clear: Callable[[], object], trim: Callable[[int], object] | None = None):
        self.ids: list[int] = []
        self.tag: object = None
        self._clear, self._trim = clear, trim

    def __len__(self) -> int:
        return len(self.ids)

    def shared(self, prompt_ids: list[int], tag: object = None) -> int:
        """The prefix of `prompt_ids` the cache holds (0 when it holds another tag's state)."""
        return shared_prefix(self.ids, prompt_ids) if tag == self.tag else 0

    def keep(self, n: int, length: int | None = None) -> int:
        """Trim the cache to its first n tokens (`length` positions where tokens and positions differ, as an
        image's embeddings make them); 0 drops it. Returns the tokens kept: n, or 0 when the trim failed."""
        if n == 0:
            self.drop()
        elif n < len(self.ids):
            if self._trim is not None and self._trim(n if length is None else length) is False:
                self.drop()
                return 0
            del self.ids[n:]
        return n

    def reuse(self, prompt_ids: list[int], enabled: bool = True, tag: object = None) -> int:
        """Keep the longest shared prefix and nothing else; returns its length (0 when reuse is off)."""
        return self.keep(self.shared(prompt_ids, tag) if enabled else 0)

    def extend(self, ids: Iterable[int]) -> None:
        self.ids.extend(ids)

    def hold(self, ids: Iterable[int], tag: object = None) -> None:
        """What the cache holds after a call the engine ran by itself (openvino-genai's pipeline)."""
        self.ids, self.tag = list(ids), tag

    def drop(self) -> None:
        self._clear()
        self.ids, self.tag = [], None
