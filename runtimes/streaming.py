"""Streamed text, assembled once for every backend: token text in, TextDeltas out, in O(1) per token.

Incremental detokenisation is the engine's or tokenizers' own (tokenizers' DecodeStream, llama.cpp's per-token
pieces through an incremental UTF-8 decoder), so a token costs the same at position 10 and 16,000. The assembler
then holds back text that could begin a stop string (or Z1's `</think>`), so the joined deltas always equal the
final text, and splits a Z1 answer into its reasoning and the answer.
"""

from __future__ import annotations

from .types import TextDelta

THINK_END = "</think>"


class TextAssembler:
    """Feed decoded text with push(); finish() flushes. `content` and `reasoning` are the joined deltas."""

    def __init__(self, stop: tuple[str, ...] = (), thinks: bool = False, marker: str = ""):
        self.stop = tuple(s for s in stop if s)
        self.marker = marker        # format, not content, if the answer starts with it (GLM-4's "\n")
        self.thinks = thinks
        self.in_reasoning = thinks  # the Z1 template opened <think>: the answer starts inside the thought
        self.buf = ""               # decoded, not yet emitted
        self.content = ""
        self.reasoning = ""
        self.stopped = False        # a stop string was met: nothing more is emitted

    def _markers(self) -> tuple[str, ...]:
        return self.stop + ((THINK_END,) if self.in_reasoning else ())

    def _emit(self, text: str, out: list[TextDelta]) -> None:
        if self.thinks and not (self.reasoning if self.in_reasoning else self.content):
            text = text.lstrip()  # the template's "<think>\n" and the "\n" after </think> are not content
        if self.marker and not self.in_reasoning and text:
            text, self.marker = (text[len(self.marker):] if text.startswith(self.marker) else text), ""
        if not text:
            return
        if self.in_reasoning:
            self.reasoning += text
        else:
            self.content += text
        out.append(TextDelta(text, reasoning=self.in_reasoning))

    def push(self, text: str) -> list[TextDelta]:
        out: list[TextDelta] = []
        if self.stopped:
            return out
        self.buf += text
        while True:
            hits = [(i, m) for m in self._markers() if (i := self.buf.find(m)) >= 0]
            if not hits:
                break
            i, marker = min(hits, key=lambda h: (h[0], h[1] == THINK_END))
            head = self.buf[:i].rstrip() if self.thinks else self.buf[:i]
            self._emit(head, out)
            if marker != THINK_END:
                self.stopped, self.buf = True, ""
                return out
            self.in_reasoning, self.buf = False, self.buf[i + len(THINK_END):]
        hold = max((k for m in self._markers() for k in range(1, min(len(m), len(self.buf) + 1))
                    if self.buf.endswith(m[:k])), default=0)
        safe = self.buf[:len(self.buf) - hold]
        if self.thinks:  # trailing whitespace waits: the end of a thought or an answer is stripped
            safe = safe.rstrip()
        self._emit(safe, out)
        self.buf = self.buf[len(safe):]
        return out

    def finish(self) -> list[TextDelta]:
        out: list[TextDelta] = []
        if not self.stopped:
            self._emit(self.buf.rstrip() if self.thinks else self.buf, out)
        self.buf = ""
        return out
