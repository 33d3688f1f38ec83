"""OpenAI chat messages as GLM-4 turns, and where a checkpoint's chat template comes from.

The turn format (docs/glm4-format.md, "Tools"): tools are described in a system block the checkpoint's template
renders — from the `tools` argument (GLM-4-0414) or from a message's `tools` field (glm-4-9b-chat). In history a
call is an assistant turn with `metadata` = the function name and the arguments as content; a result is an
`observation` turn. A Z1 answer's reasoning never enters history.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import families


def text_of(content) -> str:
    """OpenAI content: a string, None, or a list of parts, whose text parts this joins (images: image_of)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def images_of(content) -> list:
    """The images among a message's content parts: OpenAI's `image_url` (a data: URL, or a URL the caller may
    refuse) and glmkit's `image` (a local path or a PIL image), as given; read by runtimes/images.py."""
    if not isinstance(content, list):
        return []
    found = []
    for p in content:
        if isinstance(p, dict) and p.get("type") == "image_url":
            url = p.get("image_url")
            found.append(url.get("url") if isinstance(url, dict) else url)
        elif isinstance(p, dict) and p.get("type") == "image":
            found.append(p.get("image"))
    return found


def split_images(messages: list[dict]) -> tuple[list[dict], list]:
    """Messages whose content parts hold images, as GLM-4V turns: the text as content and `image` marking the
    turn the image belongs to (where the template places it); and the images, in order."""
    out, images = [], []
    for m in messages:
        found = images_of(m.get("content")) + ([m["image"]] if m.get("image") not in (None, True, False) else [])
        if found or isinstance(m.get("content"), list):
            m = {**m, "content": text_of(m.get("content"))}
            if found:
                m["image"] = True
        images += found
        out.append(m)
    return out, images


def to_glm_messages(messages: list[dict]) -> list[dict]:
    """OpenAI chat messages as GLM-4 turns: assistant `tool_calls` become metadata turns, `tool` results become
    observations, and a Z1 answer's reasoning stays out of history."""
    out: list[dict] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            out.append({"role": "observation", "content": text_of(m.get("content"))})
        elif role == "assistant":
            text = text_of(m.get("content"))
            if text or not m.get("tool_calls"):
                out.append({"role": "assistant", "content": text})
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                out.append({"role": "assistant", "metadata": fn.get("name", ""), "content": fn.get("arguments", "")})
        elif role == "developer":
            out.append({"role": "system", "content": text_of(m.get("content"))})
        elif images_of(m.get("content")):  # kept as parts: prompt.from_messages places the image (GLM-4V)
            out.append({"role": role, "content": m["content"]})
        else:
            out.append({"role": role, "content": text_of(m.get("content"))})
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


def find_template(directory: str | Path | None = None, tokenizer_config: dict | None = None,
                  gguf_template: str | None = None, config: dict | None = None, name: str = "",
                  default: bool = True) -> str | None:
    """The chat template an artifact renders with, by one precedence everywhere: a GGUF's embedded template;
    chat_template.jinja (transformers ≥ 4.48 saves it there); tokenizer_config.json's `chat_template` (a string,
    or named templates of which "default" is used); else GLM-4's own from the registry (Z1's for a Z1 model), or
    None with default=False (the checkpoint ships none)."""
    if gguf_template:
        return gguf_template
    if directory is not None:
        jinja = Path(directory) / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        if tokenizer_config is None:
            path = Path(directory) / "tokenizer_config.json"
            tokenizer_config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    found = (tokenizer_config or {}).get("chat_template")
    if isinstance(found, list):
        found = {t.get("name"): t.get("template") for t in found}.get("default")
    if found or not default:
        return found or None
    return families.chat_format(config, name or str(directory or "")).template
