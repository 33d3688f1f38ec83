"""GLM-4's output, parsed once: generated text in, typed events out — reasoning, answer text, tool calls, end.

One state machine for every consumer (Runtime.stream, the chat session, glm-chat, glm-serve, the vLLM plugins).
Text may arrive in pieces of any size: the events of a stream join to exactly those of the whole text.

    parser = OutputParser(OutputSpec(thinks=True, stop=("END",)))
    for piece in pieces:
        for event in parser.feed(piece): ...
    for event in parser.close(): ...

Two stages. The scanner watches the raw text for stop strings and, in a Z1 thought, for `</think>`, holding back
any tail that could begin one (so nothing past a stop string ever leaves, and `</think>` split over tokens is
still seen); it trims the whitespace around a thought and its answer. The turn stage reads what follows
`<|assistant|>`: the answer marker ("\\n", format, not content) or, with tools declared, the first line — a
declared tool's name starts a call, held until the turn ends and then parsed whole by the chat format's
ToolSyntax (toolcalls.py); a call that does not parse comes back as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .toolcalls import GLM4, ToolCall, ToolSyntax

THINK_START = "<think>"
THINK_END = "</think>"


@dataclass(frozen=True)
class OutputSpec:
    """How to read what a model writes after one rendered prompt (glm4.prompt makes it with the ids)."""

    thinks: bool = False            # the prompt opened <think>: the turn starts inside a thought (Z1)
    marker: bool = False            # the turn starts right after <|assistant|>: GLM-4's answer marker applies
    prefix: str = ""                # assistant text the prompt already holds (a forced tool name, an answer's "\n")
    tools: frozenset[str] = frozenset()  # declared tool names: a first line naming one starts a call
    stop: tuple[str, ...] = ()      # stop strings: the text ends before the first one
    one_call: bool = False          # the turn ends after its first call (OpenAI's parallel_tool_calls false)
    syntax: ToolSyntax = GLM4


@dataclass(frozen=True)
class Reasoning:
    text: str


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class End:
    reason: str  # "stop_string" (a stop string ended the text) or "end"


Event = Reasoning | Text | ToolCall | End

# The turn stage's states, and where a turn starts (table: (thinks, routes) → first state).
REASONING, ROUTE, ANSWER, CALL = "reasoning", "route", "answer", "call"


@dataclass
class OutputParser:
    spec: OutputSpec = field(default_factory=OutputSpec)

    def __post_init__(self):
        spec = self.spec
        self.stop = tuple(s for s in spec.stop if s)
        self.routes = bool(spec.tools) or spec.marker  # the turn's start is read before any text is released
        self.state = REASONING if spec.thinks else (ROUTE if self.routes else ANSWER)
        self.buf = ""          # scanned text not yet released (could begin a stop string or </think>)
        self.head = ""         # the turn's start while it is routed, or a whole call
        self.content = ""      # the answer so far: the joined Text events
        self.reasoning = ""    # the thought so far: the joined Reasoning events
        self.calls: list[ToolCall] = []
        self.stopped = False   # a stop string was met: nothing more is read
        self._sent = False     # anything released in the current section (thought or turn) yet
        if spec.prefix:
            out: list = []
            self._turn(spec.prefix, out)
            self._pending = out
        else:
            self._pending = []

    # -- public ------------------------------------------------------------------------------------------------
    def feed(self, text: str) -> list[Event]:
        out, self._pending = self._pending, []
        if not self.stopped:
            self.buf += text
            self._scan(out)
        return out

    def close(self, truncated: bool = False) -> list[Event]:
        """The turn's end. truncated: it was cut (by the token budget), so a call still being written, or a first
        line that could still become a tool's name, is dropped rather than passed off as an answer."""
        out, self._pending = self._pending, []
        if not self.stopped:
            self._release(self.buf.rstrip() if self.spec.thinks else self.buf, out)
        self.buf = ""
        if self.state in (ROUTE, CALL) and self.head:
            calls = self.spec.syntax.parse_calls(self.head, self.spec.tools) if self.state == CALL else None
            if calls:
                self.calls += calls
                out += calls
            elif not (truncated and self.spec.tools):
                self._answer(self._unmarked(self.head), out)
            self.head = ""
        out.append(End("stop_string" if self.stopped else "end"))
        return out

    @property
    def in_call(self) -> bool:
        return self.state == CALL

    def calls_so_far(self) -> list[ToolCall]:
        """The calls held so far when each of them already parses (for consumers that stream calls as they close,
        such as vLLM's parser API); close() still decides the turn as a whole."""
        if self.state != CALL:
            return []
        return self.spec.syntax.parse_calls(self.head, self.spec.tools) or []

    # -- the scanner: stop strings, </think>, whitespace around a thought ------------------------------------------
    def _markers(self) -> tuple[str, ...]:
        return self.stop + ((THINK_END,) if self.state == REASONING else ())

    def _scan(self, out: list) -> None:
        thinks = self.spec.thinks
        marker = self.spec.syntax.answer_marker
        if self.state == ROUTE and not self.head and marker and self.stop:  # the turn's own "\n" is not text a
            if marker.startswith(self.buf) and len(self.buf) < len(marker):  # stop string can match ("\n" is a
                return                                                      # common one): read it first
            if self.buf.startswith(marker):
                self.buf = self.buf[len(marker):]
                self._release(marker, out)
        while True:
            hits = [(i, m) for m in self._markers() if (i := self.buf.find(m)) >= 0]
            if not hits:
                break
            i, marker = min(hits, key=lambda h: (h[0], h[1] == THINK_END))
            self._release(self.buf[:i].rstrip() if thinks else self.buf[:i], out)
            if marker != THINK_END:
                self.stopped, self.buf = True, ""
                return
            self.buf = self.buf[i + len(THINK_END):]
            self.state, self._sent = (ROUTE if self.spec.tools else ANSWER), False
        hold = max((k for m in self._markers() for k in range(1, min(len(m), len(self.buf) + 1))
                    if self.buf.endswith(m[:k])), default=0)
        safe = self.buf[:len(self.buf) - hold]
        if thinks:  # trailing whitespace waits: the end of a thought or an answer is trimmed
            safe = safe.rstrip()
        self._release(safe, out)
        self.buf = self.buf[len(safe):]

    def _release(self, text: str, out: list) -> None:
        if self.stopped:
            return
        if self.spec.thinks and not self._sent:
            text = text.lstrip()  # the template's "<think>\n" and the "\n" after </think> are not content
        if not text:
            return
        self._sent = True
        if self.state == REASONING:
            self.reasoning += text
            out.append(Reasoning(text))
        else:
            self._turn(text, out)

    # -- the turn: answer marker, or a tool call ------------------------------------------------------------------
    def _turn(self, text: str, out: list) -> None:
        if self.state == ANSWER:
            self._answer(text, out)
            return
        self.head += text
        if self.state == CALL:
            if self.spec.one_call and (end := self.spec.syntax.first_call_end(self.head, self.spec.tools)):
                self.head, self.stopped, self.buf = self.head[:end], True, ""  # the rest is a second call
            return
        syntax = self.spec.syntax
        if self.spec.tools:
            route = syntax.route(self.head, self.spec.tools)
        elif len(self.head) >= len(syntax.answer_marker) or not syntax.answer_marker.startswith(self.head):
            route = "text"
        else:
            route = None
        if route == "call":
            self.state = CALL
        elif route == "text":
            self.state, held, self.head = ANSWER, self._unmarked(self.head), ""
            self._answer(held, out)

    def _unmarked(self, text: str) -> str:
        return self.spec.syntax.strip_marker(text) if self.routes else text

    def _answer(self, text: str, out: list) -> None:
        if text:
            self.content += text
            out.append(Text(text))


def parse_text(text: str, spec: OutputSpec = OutputSpec()) -> tuple[str, str | None, list[ToolCall]]:
    """A whole turn as (answer, reasoning or None, tool calls): the events of feed(text) + close()."""
    parser = OutputParser(spec)
    parser.feed(text)
    parser.close()
    return parser.content, (parser.reasoning if spec.thinks else None), parser.calls
