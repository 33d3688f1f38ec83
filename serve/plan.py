"""An OpenAI request as one typed plan, made before it is queued: the prompt rendered once (with its output spec),
GLM-4 sampling (in the manner of vLLM's `to_sampling_params`), and any grammar compiled once.

What glm-serve cannot honour is refused here, by name, with a 400 — before any work is queued.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.messages import template_reads_tools, to_glm_messages
from glmkit.glm4.prompt import Prompt
from glmkit.glm4.toolcalls import SYNTAXES
from glmkit.runtimes import GenerationConfig, images
from glmkit.runtimes.structure import Structure

from .protocol import APIError, ChatRequest, CompletionRequest, NamedToolChoice


@dataclass(frozen=True)
class RequestPlan:
    prompt: Prompt            # token ids, and how to read the reply
    config: GenerationConfig  # sampling, stop strings, budget, grammar
    chat: bool                # chat.completion (else text_completion)
    stream: bool
    include_usage: bool = False
    no_arguments: frozenset[str] = frozenset()  # tools declared without `parameters`: always called with {}
    n: int = 1  # choices, one after another (each reuses the prompt's KV)
    logprobs: int | None = None  # the answer's logprobs with this many alternatives each (None: none)
    echo_from: int | None = None  # completions' echo: the prompt ids from here are echoed (None: no echo)


def logprobs_wanted(body, chat: bool) -> int | None:
    """How many alternatives per token the request asks logprobs with (None: no logprobs), as OpenAI spells it:
    chat `logprobs: true` with `top_logprobs` 0–20, completions `logprobs` 0–5."""
    lp = body.logprobs
    if chat:
        if lp is not True and lp not in (None, False):
            raise APIError(400, "logprobs: give true or false (and top_logprobs 0 to 20)", param="logprobs")
        if not lp and body.top_logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        n = (body.top_logprobs or 0) if lp else None
    else:
        if isinstance(lp, bool) or (lp is not None and not 0 <= lp <= 5):
            raise APIError(400, "logprobs: give a number of alternatives from 0 to 5", param="logprobs")
        n = lp
    return n


def check_text(value, where: str = "") -> None:
    """Every string of a request must be text UTF-8 can carry: JSON's "\\ud800" escapes decode to a lone
    surrogate, which no tokenizer can encode. Refused with the field's name."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise APIError(400, f"{where or 'body'}: holds a lone surrogate ({value[e.start]!r} at character "
                                f"{e.start}), which is not text; send valid Unicode", param=where or None) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, where)
            check_text(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_text(v, f"{where}.{i}" if where else str(i))


TEXT_PARTS = ("text",)  # content parts a GLM-4 text model takes
MAX_CHOICES = 16  # n: each choice is a generation of its own, one after another


@dataclass(frozen=True)
class ImagePolicy:
    """What glm-serve accepts as an image (GLM-4V): data: URLs within limits; remote URLs only if allowed."""

    max_bytes: int = images.MAX_BYTES
    max_pixels: int = images.MAX_PIXELS
    allow_remote: bool = False


def refuse_unsupported(body, image_parts: bool = False) -> None:
    """What glm-serve would otherwise ignore is refused by name, as OpenAI refuses what a model cannot do."""
    for i, m in enumerate(getattr(body, "messages", None) or []):
        for j, part in enumerate(m.content if isinstance(m.content, list) else []):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in TEXT_PARTS and not (image_parts and kind == "image_url"):
                raise APIError(400, f"messages.{i}.content.{j}: a {kind!r} part; this model reads text"
                                    f"{' and image_url parts' if image_parts else ' only'}",
                               param=f"messages.{i}.content.{j}.type")
    extra = body.model_extra or {}
    if extra.get("logit_bias"):
        raise APIError(400, "logit_bias is not supported", param="logit_bias")
    for legacy, instead in (("functions", "tools"), ("function_call", "tool_choice")):
        if extra.get(legacy) is not None:
            raise APIError(400, f"{legacy} is OpenAI's deprecated form; send {instead}", param=legacy)


def sampling(body, runtime, max_tokens: int | None, n_prompt: int,
             structure: Structure | None = None) -> GenerationConfig:
    """The request's sampling as a GenerationConfig: OpenAI's defaults, the model card's where the request is
    silent (Z1: temperature 0.6, top_p 0.95, top_k 40); what cannot be honoured is refused by name."""
    if body.n is not None and not 1 <= body.n <= MAX_CHOICES:
        raise APIError(400, f"n: give 1 to {MAX_CHOICES} choices", param="n")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise APIError(400, "stop: at most 4 sequences", param="stop")
    room = runtime.context_length - n_prompt
    if room < 1:
        raise APIError(400, f"the prompt is {n_prompt} tokens; the context holds {runtime.context_length}: "
                            "shorten the conversation", code="context_length_exceeded", param="messages")
    if max_tokens is not None and max_tokens > room:
        raise APIError(400, f"max_tokens {max_tokens} does not fit: the prompt is {n_prompt} tokens of a "
                            f"{runtime.context_length}-token context, {room} left", param="max_tokens",
                       code="context_length_exceeded")
    return GenerationConfig.for_model(
        runtime.chat_format.sampling, body.temperature, body.top_p, body.top_k, default_temperature=1.0,
        max_new_tokens=max_tokens or room, repetition_penalty=body.repetition_penalty or 1.0, stop=tuple(stop),
        structure=structure,
        frequency_penalty=body.frequency_penalty or 0.0, presence_penalty=body.presence_penalty or 0.0,
        seed=None if body.seed is None else body.seed % 2**32)  # OpenAI takes any integer; the engines 32 bits


def response_format(fmt: dict | None) -> Structure | None:
    """OpenAI's response_format as a Structure the engine enforces while decoding; None for plain text."""
    kind = (fmt or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return Structure.json()
    if kind == "json_schema":
        spec = (fmt or {}).get("json_schema")
        schema = spec.get("schema", {}) if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise APIError(400, "response_format.json_schema: give {'name': ..., 'schema': {JSON schema}}",
                           param="response_format")
        return Structure.json(schema)
    raise APIError(400, f"response_format type {kind!r}: use 'text', 'json_object' or 'json_schema'",
                   param="response_format")


def check_structure(structure: Structure, runtime, param: str) -> Structure:
    """Refused up front, by name, where the engine cannot enforce it; the grammar is compiled here, once."""
    if not runtime.capabilities.constrained:
        raise APIError(400, f"{param}: constrained answers need a backend with constrained decoding; "
                            f"{runtime.backend} has none", param=param)
    if runtime.chat_format.thinks:
        raise APIError(400, f"{param}: a Z1 model's answer opens with a thought, which a constraint would cut "
                            "out; ask for JSON in the prompt instead", param=param)
    try:
        structure.grammar  # noqa: B018  (building it is the check)
    except Exception as e:  # the converter raises assorted errors on schemas it cannot express
        raise APIError(400, f"{param}: the engine cannot enforce this schema ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else 'unsupported'})", param=param) from None
    return structure


def read_images(messages: list[dict], policy: ImagePolicy) -> list[dict]:
    """Each image_url part read (and limited) now, so a bad image is a 400 before the request is queued; the
    decoded image replaces its URL."""
    out = []
    for i, m in enumerate(messages):
        if isinstance(m.get("content"), list):
            parts = []
            for j, part in enumerate(m["content"]):
                if isinstance(part, dict) and part.get("type") == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    try:
                        img = images.read(url, policy.max_bytes, policy.max_pixels, policy.allow_remote,
                                          local=False)
                    except GlmkitError as e:
                        raise APIError(400, f"messages.{i}.content.{j}: {e}",
                                       param=f"messages.{i}.content.{j}.image_url") from None
                    part = {"type": "image", "image": img.rgb}
                parts.append(part)
            m = {**m, "content": parts}
        out.append(m)
    return out


def plan_chat(body: ChatRequest, runtime, image_policy: ImagePolicy | None = None) -> RequestPlan:
    """Messages, tools and a forced start of the assistant's turn, rendered once; validated before it is queued."""
    check_text(body.model_dump(exclude_none=True))
    vision = runtime.capabilities.images
    refuse_unsupported(body, image_parts=vision)
    raw = [m.model_dump(exclude_none=True) for m in body.messages]
    messages = to_glm_messages(read_images(raw, image_policy or ImagePolicy()) if vision else raw)
    tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
    choice = body.tool_choice
    formatted = response_format(body.response_format)
    prefix, structure, calls = "", formatted, None
    syntax = SYNTAXES[runtime.chat_format.tool_syntax]  # how this model writes a call and marks an answer
    if tools and template_reads_tools(runtime.tokenizer.chat_template) is None:
        raise APIError(400, "this model's chat template has no tools block, so it cannot be told about tools; "
                            "serve a checkpoint whose template describes tools (GLM-4-0414, glm-4-9b-chat)",
                       param="tools")
    if choice is not None and not tools and choice != "none":
        raise APIError(400, "tool_choice needs tools", param="tool_choice")
    named = choice.function.get("name") if isinstance(choice, NamedToolChoice) else None
    forced = [] if choice in (None, "auto", "none") or not tools else (
        tools if choice == "required" else [t for t in tools if t["function"]["name"] == named])
    if tools and isinstance(choice, NamedToolChoice) and not forced:
        raise APIError(400, f"tool_choice names {named!r}, which is not among the tools",
                       param="tool_choice")
    if tools and choice == "none":
        calls, prefix = (), syntax.answer_marker  # forcing the marker forces an answer
    elif forced and runtime.capabilities.constrained and not runtime.chat_format.thinks:
        # the engine's grammar: a forced tool's name (or one of the declared ones, for "required"), a newline, and
        # arguments that match its parameters schema — a call always comes back. The tool's schema, never the
        # response_format's, constrains its arguments; a forced call leaves no text answer for response_format.
        structure = check_structure(Structure.tool_call(forced, syntax=syntax.name), runtime, "tool_choice")
    elif len(forced) == 1:  # no constrained decoding here: the turn starts with the name, as a history call does
        prefix, structure = syntax.call_head(forced[0]["function"]["name"]), None
    elif forced:
        structure = check_structure(Structure.tool_call(forced, syntax=syntax.name), runtime,
                                    "tool_choice")  # refused, with why
    if formatted and tools and choice in (None, "auto"):
        # one grammar: a call of a declared tool, or an answer of the response schema (tools stay on)
        structure = check_structure(Structure.tool_call(tools, formatted, syntax.name), runtime,
                                    "response_format")
    if formatted and structure is formatted:
        check_structure(formatted, runtime, "response_format")
        if not prefix:
            prefix = syntax.answer_marker  # the JSON follows the answer's marker
    prompt = runtime.prompt(messages, tools=tools or None, assistant_prefix=prefix, calls=calls)
    if body.parallel_tool_calls is False:  # honoured: the turn ends after its first call
        prompt = replace(prompt, output=replace(prompt.output, one_call=True))
    config = sampling(body, runtime, body.max_completion_tokens or body.max_tokens, len(prompt.ids), structure)
    bare = frozenset(t["function"]["name"] for t in tools if t["function"].get("parameters") is None)
    return RequestPlan(prompt, config, chat=True, stream=body.stream, include_usage=_usage_wanted(body),
                       no_arguments=bare, n=body.n or 1, logprobs=logprobs_wanted(body, chat=True))


def plan_completion(body: CompletionRequest, runtime) -> RequestPlan:
    check_text(body.model_dump(exclude_none=True))
    refuse_unsupported(body)
    if body.suffix:
        raise APIError(400, "suffix is not supported", param="suffix")
    text = _one_prompt(body.prompt)
    vocab = runtime.tokenizer.vocab_size
    if isinstance(text, list) and not all(0 <= t < vocab for t in text):
        raise APIError(400, f"prompt: token ids run from 0 to {vocab - 1}", param="prompt")
    if body.max_tokens == 0 and not body.echo:
        raise APIError(400, "max_tokens 0 answers nothing: send echo: true, or max_tokens of 1 or more",
                       param="max_tokens")
    structure = response_format(body.response_format)
    if structure is not None:
        check_structure(structure, runtime, "response_format")
    prompt = runtime.prompt(text)  # text gets [gMASK]<sop> in front; ids are as given
    max_tokens = 16 if body.max_tokens is None else body.max_tokens
    config = sampling(body, runtime, max(1, max_tokens), len(prompt.ids), structure)
    echo_from = (len(prompt.ids) - len(text) if isinstance(text, list) else
                 len(prompt.ids) - len(runtime.tokenizer.encode(text))) if body.echo else None
    return RequestPlan(prompt, replace(config, max_new_tokens=max_tokens), chat=False, stream=body.stream,
                       include_usage=_usage_wanted(body), n=body.n or 1, logprobs=logprobs_wanted(body, chat=False),
                       echo_from=echo_from)


def _one_prompt(prompt: str | list) -> str | list[int]:
    """The one prompt of a request: text, or token ids (a batch of one is taken as its one prompt)."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        if len(prompt) != 1:
            raise APIError(400, "prompt: give one prompt (batches of prompts are not supported)", param="prompt")
        prompt = prompt[0]
    if not prompt:
        raise APIError(400, "prompt: give some text or token ids", param="prompt")
    return prompt


def _usage_wanted(body) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


__all__ = ["ImagePolicy", "RequestPlan", "check_structure", "plan_chat", "plan_completion", "response_format",
           "sampling"]
