"""A multi-turn chat: history, system prompt, reset, and trimming from the oldest turn to fit the context.

Each turn's prompt is the previous prompt plus the answer and the new message, so every backend prefills only the
new part (the engine keeps the KV of the shared prefix).
"""

from __future__ import annotations

from typing import Iterator

from glmkit.convert.errors import GlmkitError

from .types import GenerationConfig, GenerationResult


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

    def messages(self, user: str, config: GenerationConfig | None = None) -> list[dict]:
        """The turns sent for `user`: the oldest user/assistant pairs are dropped until the prompt plus the answer
        budget (this call's max_new_tokens) fits the context. One message that cannot fit on its own is an error,
        never a silent overflow."""
        max_new = (config or self.config).max_new_tokens
        system = [{"role": "system", "content": self.system}] if self.system else []
        budget = self.runtime.context_length - max_new
        while True:
            msgs = system + self.history + [{"role": "user", "content": user}]
            n = len(self.runtime.prompt_ids(msgs))
            if n <= budget:
                return msgs
            if not self.history:
                raise GlmkitError(f"the message needs {n} prompt tokens, but the context of "
                                  f"{self.runtime.context_length} leaves {budget} after --max-new-tokens "
                                  f"{max_new}; shorten it or lower --max-new-tokens")
            del self.history[:2]
            self.trimmed += 1

    def stream(self, user: str, config: GenerationConfig | None = None) -> Iterator:
        """TextDeltas of the answer, then its GenerationResult; the turn joins the history when it ends."""
        config = config or self.config
        for event in self.runtime.stream(self.messages(user, config), config):
            if isinstance(event, GenerationResult):
                self.history += [{"role": "user", "content": user}, {"role": "assistant", "content": event.text}]
                self.last = event
            yield event

    def send(self, user: str, config: GenerationConfig | None = None) -> GenerationResult:
        result = None
        for event in self.stream(user, config):
            result = event
        return result
