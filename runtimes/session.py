"""A multi-turn chat: history, system prompt, reset, and trimming from the oldest turn to fit the context.

Each turn's prompt is the previous prompt plus the answer and the new message, so every backend prefills only the
new part (the engine keeps the KV of the shared prefix). A turn's prompt is rendered once: the rendering that
checked it fits is the one generated from.
"""

from __future__ import annotations

from collections.abc import Iterator

from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.prompt import Prompt

from .types import GenerationConfig, GenerationResult


class ChatSession:
    def __init__(self, runtime, system: str | None = None, config: GenerationConfig | None = None):
        self.runtime = runtime
        self.system = system
        self.config = config or GenerationConfig()
        self.history: list[dict] = []   # user/assistant turns, answers without their reasoning
        self.trimmed = 0                # turns dropped so far to fit the context
        self.last: GenerationResult | None = None
        self.image = None               # GLM-4V: an image to send with the next message (attach())

    def reset(self) -> None:
        self.history.clear()
        self.trimmed = 0
        self.image = None

    def attach(self, image) -> None:
        """Send `image` (a path, a data: URL, a PIL image) with the next message; read now, so a bad one is an
        error here rather than after the message is typed."""
        from . import images

        images.read(image)
        self.image = image

    def _content(self, user):
        if self.image is None or not isinstance(user, str):
            return user
        return [{"type": "image", "image": self.image}, {"type": "text", "text": user}]

    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def messages(self, user: str, config: GenerationConfig | None = None) -> list[dict]:
        """The turns sent for `user` (see prompt())."""
        return self._fit(user, config)[0]

    def prompt(self, user: str, config: GenerationConfig | None = None) -> Prompt:
        """The rendered prompt for `user`: the oldest user/assistant pairs are dropped until the prompt plus the
        answer budget (this call's max_new_tokens) fits the context. One message that cannot fit on its own is an
        error, never a silent overflow."""
        return self._fit(user, config)[1]

    def _fit(self, user: str, config: GenerationConfig | None) -> tuple[list[dict], Prompt]:
        max_new = (config or self.config).max_new_tokens
        system = [{"role": "system", "content": self.system}] if self.system else []
        budget = self.runtime.context_length - max_new
        while True:
            msgs = system + self.history + [{"role": "user", "content": self._content(user)}]
            rendered = self.runtime.prompt(msgs)
            n = len(rendered.ids)
            if n <= budget:
                return msgs, rendered
            if not self.history:
                raise GlmkitError(f"the message needs {n} prompt tokens, but the context of "
                                  f"{self.runtime.context_length} leaves {budget} after --max-new-tokens "
                                  f"{max_new}; shorten it or lower --max-new-tokens")
            del self.history[:2]
            self.trimmed += 1

    def stream(self, user: str, config: GenerationConfig | None = None) -> Iterator:
        """TextDeltas of the answer, then its GenerationResult; the turn joins the history when it ends."""
        config = config or self.config
        for event in self.runtime.stream(self.prompt(user, config), config):
            if isinstance(event, GenerationResult):
                self.history += [{"role": "user", "content": self._content(user)},
                                 {"role": "assistant", "content": event.text}]
                self.image = None  # it stays in the history, so later turns still see it
                self.last = event
            yield event

    def send(self, user: str, config: GenerationConfig | None = None) -> GenerationResult:
        result = None
        for event in self.stream(user, config):
            result = event
        assert isinstance(result, GenerationResult)  # stream() always ends with it
        return result
