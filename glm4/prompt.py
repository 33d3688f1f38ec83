"""A request rendered once: GLM-4 token ids, and how to read what the model writes after them.

Every GLM-4 prompt starts with `[gMASK]<sop>` (the original tokenizer puts it before plain text too). Chat messages
go through the checkpoint's own chat template (template.py renders it as transformers does), with OpenAI `tools`
where the template reads them (messages.py) and an optional forced start of the assistant's turn (a tool name, or
the "\\n" of a plain answer). The Prompt carries its OutputSpec, so how a generation is parsed follows from what was
rendered, never from the Python type of what the caller passed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import families, vision
from .errors import GlmkitError
from .messages import attach_tools, split_images
from .parser import OutputSpec
from .toolcalls import SYNTAXES

ASSISTANT = "<|assistant|>"


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    output: OutputSpec = field(default_factory=OutputSpec)
    image: object = None  # GLM-4V: the conversation's image as given (runtimes/images.py reads it)


def from_ids(ids: Iterable[int]) -> Prompt:
    """Token ids as given: nothing is known of the turn, so the output is read as plain text."""
    return Prompt(list(ids))


def from_text(tokenizer, text: str, raw: bool = False) -> Prompt:
    """A plain string with `[gMASK]<sop>` in front, as GLM-4's own tokenizer encodes every text (raw=True: as it
    is; a string that already starts with it is not given it twice)."""
    if raw or text.startswith(families.PROMPT_PREFIX):
        return Prompt(tokenizer.encode(text))
    return Prompt(tokenizer.encode(families.PROMPT_PREFIX + text))


def from_messages(tokenizer, messages: list[dict], chat_format: families.ChatFormat,
                  tools: list[dict] | None = None, assistant_prefix: str = "",
                  calls: Iterable[str] | None = None) -> Prompt:
    """GLM-4 turns (role, content, metadata) through the tokenizer's chat template, rendered once. `tools`: OpenAI
    tools described to the model; `calls`: the names a reply may call (default: every tool's; empty: none);
    `assistant_prefix`: text the assistant's turn is forced to start with."""
    messages, images = split_images(list(messages))
    if images and not chat_format.images:
        raise GlmkitError("this model reads text only; an image needs a GLM-4V model (glm-convert THUDM/glm-4v-9b "
                          "--to openvino)")
    if len(images) > vision.IMAGES_PER_CONVERSATION:
        raise GlmkitError(f"GLM-4V reads one image per conversation and this one has {len(images)}; start a new "
                          "conversation for another image")
    messages, tools_arg = attach_tools(messages, tools, tokenizer.chat_template)
    text = tokenizer.render_chat(messages, tools=tools_arg)
    names = frozenset(calls if calls is not None else (t["function"]["name"] for t in tools or ()))
    output = OutputSpec(thinks=chat_format.thinks and not assistant_prefix, marker=text.endswith(ASSISTANT),
                        prefix=assistant_prefix, tools=names, syntax=SYNTAXES[chat_format.tool_syntax])
    return Prompt(tokenizer.encode(text + assistant_prefix), output, images[0] if images else None)
