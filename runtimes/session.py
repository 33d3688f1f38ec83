"""A multi-turn chat: history, system prompt, reset, and trimming from the oldest turn to fit the context."""

from __future__ import annotations

from typing import Iterator

from glmkit.convert import GlmkitError

from .base import GenerationConfig, GenerationResult


class ChatSession:
    def __init__(self, runtime, system: str | None = None, config: GenerationConfig | None = None):
        self.runtime = runtime
        self.system = system
        self.config = config or GenerationConfig()
        self.history: list[dict] = []   # user/assistant turns, answers without their reasoning
        self.trimmed = 0                # turns dropped so far to fit the context
        self.last: GenerationResult | None = None

    def reset(self) -> None:
        self.history.clear()
        self.trimmed = 0

    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def messages(self, user: str) -> list[dict]:
        """The turns sent for `user`: the oldest user/assistant pairs are dropped until the prompt plus the answer
        budget fits the context. One message that cannot fit on its own is an error, never a silent overflow."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        budget = self.runtime.context_length - self.config.max_new_tokens
        while True:
            msgs = system + self.history + [{"role": "user", "content": user}]
            n = len(self.runtime.prompt_ids(msgs))
            if n <= budget:
                return msgs
            if not self.history:
                raise GlmkitError(f"the message needs {n} prompt tokens, but the context of "
                                  f"{self.runtime.context_length} leaves {budget} after --max-new-tokens "
                                  f"{self.config.max_new_tokens}; shorten it or lower --max-new-tokens")
            del self.history[:2]
            self.trimmed += 1

    def stream(self, user: str, config: GenerationConfig | None = None) -> Iterator:
        msgs = self.messages(user)
        result = None
        for piece in self.runtime.stream(msgs, config or self.config):
            if isinstance(piece, GenerationResult):
                result = piece
            else:
                yield piece
        self.history += [{"role": "user", "content": user}, {"role": "assistant", "content": result.text}]
        self.last = result
        yield result

    def send(self, user: str, config: GenerationConfig | None = None) -> GenerationResult:
        result = None
        for piece in self.stream(user, config):
            result = piece
        return result
