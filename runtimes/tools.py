"""GLM-4's tool calls (GLM-4-0414 and glm-4-9b-chat), between OpenAI's messages and the model's own turns.

The format (DESIGN.md, "Tool calling"): tools are described in a system block the checkpoint's template renders —
from the `tools` argument (0414) or from a message's `tools` field (glm-4-9b-chat). After `<|assistant|>` the model
writes either `\\n` and an answer, or `name\\n{json arguments}` and stops on `<|observation|>`; several calls in one
turn repeat `<|assistant|>name\\n{json}`. In history a call is an assistant turn with `metadata` = the name and the
arguments as content, and a result is an `observation` turn.

Parsing follows THUDM's own reading (split on `<|assistant|>`, the first line names the tool) with two guards, so
a malformed call never reaches a client as a broken one: the name must be a declared tool and the rest a JSON
object; anything else is returned as text.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

ASSISTANT = "<|assistant|>"


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as the model wrote it
    id: str = ""

    def __post_init__(self):
        self.id = self.id or f"call_{uuid.uuid4().hex[:24]}"


def _text(content) -> str:
    """OpenAI content: a string, None, or a list of parts of which only text parts exist for GLM-4 here."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def to_glm_messages(messages: list[dict]) -> list[dict]:
    """OpenAI chat messages as GLM-4 turns: assistant `tool_calls` become metadata turns, `tool` results become
    observations, and a Z1 answer's reasoning stays out of history."""
    out: list[dict] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            out.append({"role": "observation", "content": _text(m.get("content"))})
        elif role == "assistant":
            text = _text(m.get("content"))
            if text or not m.get("tool_calls"):
                out.append({"role": "assistant", "content": text})
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                out.append({"role": "assistant", "metadata": fn.get("name", ""), "content": fn.get("arguments", "")})
        elif role == "developer":
            out.append({"role": "system", "content": _text(m.get("content"))})
        else:
            out.append({"role": role, "content": _text(m.get("content"))})
    return out


def template_reads_tools(template: str) -> str | None:
    """Where a chat template takes tools from: "argument" (GLM-4-0414), "message" (glm-4-9b-chat), or None."""
    if "item['tools']" in template or 'item["tools"]' in template or "item.tools" in template:
        return "message"
    return "argument" if "tools" in template else None


def attach_tools(messages: list[dict], tools: list[dict] | None, template: str) -> tuple[list[dict], list | None]:
    """Messages and the `tools` argument for rendering: glm-4-9b-chat's template reads tools from a message."""
    if tools and template_reads_tools(template) == "message":
        first = {**messages[0], "tools": tools} if messages else {"role": "system", "content": "", "tools": tools}
        return [first] + messages[1:], None
    return messages, tools or None


def parse(text: str, names: set[str]) -> tuple[str, list[ToolCall]]:
    """The model's turn as (content, tool calls). Calls are kept only when every piece is a valid call; otherwise
    the whole text is content."""
    pieces = text.split(ASSISTANT)
    calls = [parse_call(p, names) for p in pieces]
    if pieces and all(calls):
        return "", calls
    return strip_answer(text), []


def strip_answer(text: str) -> str:
    """A plain answer starts with the newline that marks it as not a call."""
    return text[1:] if text.startswith("\n") else text


def parse_call(piece: str, names: set[str]) -> ToolCall | None:
    """One `name\\n{arguments}` piece as a call, or None: the name must be declared and the rest a JSON object."""
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


class StreamRouter:
    """Decides, from the first line of a streamed turn, whether it is an answer or a call.

    An answer streams as it comes (feed returns its text); a call is held until the turn ends, then `finish`
    parses it — and returns it as text if it is not a valid call."""

    def __init__(self, names: set[str]):
        self.names = names
        self.buf = ""
        self.mode = "undecided" if names else "text"  # -> "text" | "call"
        self.started = False

    def feed(self, delta: str) -> str:
        if self.mode == "text":
            return self._text(delta)
        self.buf += delta
        if self.mode == "call":
            return ""
        head, sep, _ = self.buf.partition("\n")
        if sep:
            self.mode = "call" if head.strip() in self.names else "text"
        elif not any(n.startswith(head.strip()) for n in self.names) or len(head) > max(map(len, self.names)) + 2:
            self.mode = "text"
        if self.mode == "text":
            held, self.buf = self.buf, ""
            return self._text(held)
        return ""

    def _text(self, delta: str) -> str:
        if not self.started and delta:
            self.started = True
            return strip_answer(delta)
        return delta

    def finish(self) -> tuple[str, list[ToolCall]]:
        """What is left: (text not yet returned, calls)."""
        if self.mode == "text" or not self.buf:
            return "", []
        content, calls = parse(self.buf, self.names)
        return (content if calls == [] else ""), calls
