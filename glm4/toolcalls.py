"""GLM-4's tool-call markup, as data and two pure functions the output parser drives.

After `<|assistant|>` the model writes either `\\n` and an answer, or `name\\n{json arguments}` and stops on
`<|observation|>`; several calls in one turn repeat `<|assistant|>name\\n{json}` (GLM-4-0414 and glm-4-9b-chat
alike). THUDM's own reading: split on `<|assistant|>`, the first line names the tool. Two guards keep a malformed
call from reaching a client as a broken one: the name must be a declared tool and the rest a JSON object; anything
else is text. Another format (GLM-4.5's `<tool_call>` markup) would be another ToolSyntax here, chosen by the
chat format in families.py; the parser itself would not change.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

ASSISTANT = "<|assistant|>"


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as the model wrote it (re-serialised)
    id: str = ""

    def __post_init__(self):
        self.id = self.id or f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolSyntax:
    """How calls are written: what separates calls in one turn, and what marks a plain answer."""

    name: str
    separator: str      # between the calls of one turn
    answer_marker: str  # written right after <|assistant|> before a plain answer; format, not content

    # -- writing: what the renderer forces, the grammar constrains and the parser reads back -------------------
    def call_head(self, name: str) -> str:
        """What a call of `name` opens with: forced as the turn's start when the name is the one allowed."""
        return f"{name}\n"

    def write_call(self, name: str, arguments: dict | str) -> str:
        """One call as the model writes it (`parse_call` reads it back)."""
        args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        return self.call_head(name) + args

    def call_grammar(self, name: str, arguments_rule: str) -> str:
        """A GBNF alternative for one call of `name`: its head as a literal, then the arguments' rule."""
        return f"{json.dumps(self.call_head(name))} {arguments_rule}"

    def answer_grammar(self, answer_rule: str) -> str:
        """A GBNF alternative for a plain answer: the marker, then the answer's rule."""
        return f"{json.dumps(self.answer_marker)} {answer_rule}"

    # -- reading ---------------------------------------------------------------------------------------------

    def route(self, head: str, names: frozenset[str]) -> str | None:
        """From the start of a turn: "call", "text", or None while it cannot tell yet."""
        line, sep, _ = head.partition("\n")
        if sep:
            return "call" if line.strip() in names else "text"
        longest = max(map(len, names), default=0)
        if not any(n.startswith(line.strip()) for n in names) or len(line) > longest + 2:
            return "text"
        return None

    def parse_call(self, piece: str, names: frozenset[str] | set[str]) -> ToolCall | None:
        """One `name\\n{arguments}` piece as a call, or None: the name must be declared and the rest an object."""
        name, sep, args = piece.partition("\n")
        if not sep or name.strip() not in names:
            return None
        try:
            value = json.loads(args)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        return ToolCall(name.strip(), json.dumps(value, ensure_ascii=False))

    def parse_calls(self, text: str, names: frozenset[str] | set[str]) -> list[ToolCall] | None:
        """Every call of a turn, or None unless the whole turn is valid calls (then it is text). A separator
        splits calls only where the text before it is a whole call: inside an argument string it is text."""
        calls, piece = [], ""
        for part in text.split(self.separator):
            piece = f"{piece}{self.separator}{part}" if piece else part
            if call := self.parse_call(piece, names):
                calls.append(call)
                piece = ""
        return calls if calls and not piece else None

    def first_call_end(self, text: str, names: frozenset[str] | set[str]) -> int | None:
        """Where the turn's first call ends, once a separator shows another follows; None until then."""
        at = text.find(self.separator)
        while at >= 0:
            if self.parse_call(text[:at], names):
                return at
            at = text.find(self.separator, at + 1)
        return None

    def strip_marker(self, text: str) -> str:
        return text[len(self.answer_marker):] if text.startswith(self.answer_marker) else text


GLM4 = ToolSyntax("glm4", separator=ASSISTANT, answer_marker="\n")
SYNTAXES: dict[str, ToolSyntax] = {GLM4.name: GLM4}
