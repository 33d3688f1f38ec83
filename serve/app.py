"""glm-serve's ASGI app: OpenAI's /v1/chat/completions, /v1/completions and /v1/models over one glmkit runtime.

    from glmkit.serve import create_app
    app = create_app(load("glm4-tiny-ov"), api_key="…")    # any ASGI server runs it; glm-serve uses uvicorn

GLM-4 specifics live in the runtime (template, stop tokens, Z1 reasoning) and runtimes/tools.py (tool calls);
this module maps the OpenAI protocol onto them and answers every bad request with a 4xx error object.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from glmkit.convert.errors import GlmkitError
from glmkit.runtimes import GenerationConfig, GenerationResult, TextDelta
from glmkit.runtimes import tools as glm_tools
from glmkit.runtimes.structure import Structure

from .engine import Engine
from .protocol import APIError, ChatRequest, CompletionRequest

log = logging.getLogger("glmkit.serve")
MAX_BODY_BYTES = 4 * 2**20  # a long chat with tools is kilobytes; anything near this is a mistake or an attack
FINISH = {"stop": "stop", "stop_string": "stop", "length": "length", "interrupted": "stop"}
STATIC = Path(__file__).parent / "static"  # the chat page: plain files, no build step, nothing from a CDN
# The page runs only its own scripts and talks only to this server; a model answer is never parsed as HTML.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                                           "img-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def create_app(runtime, model_name: str | None = None, api_key: str | None = None, max_queue: int = 8,
               cors: list[str] | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The app serving `runtime` (from glmkit.runtimes.load; load(parallel=N) to batch N requests at once) as
    model `model_name`; up to `max_queue` more requests wait, the rest get 429."""
    name = model_name or runtime.name
    engine = Engine(runtime, max_queue)
    @asynccontextmanager
    async def lifespan(app):
        yield
        engine.close()

    app = FastAPI(title="glm-serve", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.engine = engine
    created = int(time.time())

    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors, allow_methods=["*"], allow_headers=["*"])

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """API key (constant-time compare) and body size, before anything reads the body."""
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return _error(APIError(401, "missing or wrong API key: send Authorization: Bearer KEY",
                                       code="invalid_api_key", kind="authentication_error"))
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return _error(APIError(413, f"request body over {max_body_bytes} bytes"))
        response = await call_next(request)
        if not request.url.path.startswith("/v1/"):
            response.headers.update(PAGE_HEADERS)
        return response

    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        return _error(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        return _error(APIError(400, f"{where + ': ' if where else ''}{message}", param=where or None))

    @app.exception_handler(GlmkitError)
    async def glmkit_error(request, e: GlmkitError):
        return _error(APIError(400, str(e)))

    @app.exception_handler(Exception)
    async def unexpected(request, e: Exception):
        log.exception("unexpected error")  # the server log has the traceback; the client never does
        return _error(APIError(500, f"internal error ({type(e).__name__}); see the server log",
                               kind="server_error"))

    default_openapi = app.openapi

    def openapi() -> dict:
        """The schema names the one model served, so clients (and schema-driven testers) can know it."""
        schema = default_openapi()
        for body in ("ChatRequest", "CompletionRequest"):
            schema["components"]["schemas"][body]["properties"]["model"]["enum"] = [name]
        return schema

    app.openapi = openapi

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "backend": runtime.backend,
                "device": getattr(runtime, "device", "CPU"),
                "requests_in_progress": engine.admitted, "generating": engine.generating,
                "max_concurrency": engine.workers, "peak_generating": engine.peak,
                "generations_finished": engine.finished, "generations_cancelled": engine.cancelled}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(name, runtime, created)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        _check_model(model_id, name)
        return _model_card(name, runtime, created)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        _check_model(body.model, name)
        plan = _chat_plan(body, runtime)
        return await _respond(request, engine, body, plan, name, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, name)
        if body.echo or body.suffix:
            raise APIError(400, "echo and suffix are not supported", param="echo" if body.echo else "suffix")
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1 or not isinstance(prompt[0], str):
                raise APIError(400, "prompt: give one string (batches of prompts are not supported)",
                               param="prompt")
            prompt = prompt[0]
        plan = {"prompt": prompt, "tools": None, "prefix": "", "names": set(),
                "config": _config(body, runtime, body.max_tokens or 16, runtime.prompt_ids(prompt))}
        return await _respond(request, engine, body, plan, name, chat=False)

    return app


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _check_model(given: str, name: str) -> None:
    if given != name:
        raise APIError(404, f"model {given!r} is not served here; this server serves {name!r} (GET /v1/models)",
                       param="model", code="model_not_found")


def _model_card(name: str, runtime, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "glmkit", "backend": runtime.backend,
            "context_length": runtime.context_length}


def _config(body, runtime, max_tokens: int | None, prompt_ids: list[int]) -> GenerationConfig:
    """The request's sampling as a GenerationConfig: OpenAI's defaults, the model card's where the request is
    silent (Z1: temperature 0.6, top_p 0.95, top_k 40); what cannot be honoured is refused by name."""
    if body.n != 1:
        raise APIError(400, "n: only 1 is supported", param="n")
    if body.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")
    structure = _response_format(body.response_format, runtime)
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise APIError(400, "stop: at most 4 sequences", param="stop")
    room = runtime.context_length - len(prompt_ids)
    if room < 1:
        raise APIError(400, f"the prompt is {len(prompt_ids)} tokens; the context holds {runtime.context_length}: "
                            "shorten the conversation", code="context_length_exceeded", param="messages")
    if max_tokens is not None and max_tokens > room:
        raise APIError(400, f"max_tokens {max_tokens} does not fit: the prompt is {len(prompt_ids)} tokens of a "
                            f"{runtime.context_length}-token context, {room} left", param="max_tokens",
                       code="context_length_exceeded")
    card = runtime.chat_format.sampling
    temperature = body.temperature if body.temperature is not None else card.get("temperature", 1.0)
    return GenerationConfig(
        max_new_tokens=max_tokens or room, temperature=temperature,
        top_p=body.top_p if body.top_p is not None else card.get("top_p", 1.0),
        top_k=body.top_k if body.top_k is not None else card.get("top_k", 0),
        repetition_penalty=body.repetition_penalty or 1.0, stop=tuple(stop), structure=structure,
        frequency_penalty=body.frequency_penalty or 0.0, presence_penalty=body.presence_penalty or 0.0,
        seed=None if body.seed is None else body.seed % 2**32)  # OpenAI takes any integer; the engines 32 bits


def _response_format(fmt: dict | None, runtime) -> Structure | None:
    """OpenAI's response_format as a Structure the engine enforces while decoding; None for plain text."""
    kind = (fmt or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        structure = Structure.json()
    elif kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema", {}) if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise APIError(400, "response_format.json_schema: give {'name': ..., 'schema': {JSON schema}}",
                           param="response_format")
        structure = Structure.json(schema)
    else:
        raise APIError(400, f"response_format type {kind!r}: use 'text', 'json_object' or 'json_schema'",
                       param="response_format")
    return _check_structure(structure, runtime, "response_format")


def _check_structure(structure: Structure, runtime, param: str) -> Structure:
    """Refused up front, by name, where the engine cannot enforce it."""
    if runtime.backend not in ("openvino", "llamacpp"):
        raise APIError(400, f"{param}: constrained answers need the openvino or llamacpp backend; "
                            f"{runtime.backend} has no constrained decoding", param=param)
    if runtime.chat_format.thinks:
        raise APIError(400, f"{param}: a Z1 model's answer opens with a thought, which a constraint would cut "
                            "out; ask for JSON in the prompt instead", param=param)
    try:
        if runtime.backend == "llamacpp":
            from glmkit.runtimes.structure import gbnf

            gbnf(structure)
        else:
            from glmkit.runtimes.structure import openvino_config

            openvino_config(structure)
    except Exception as e:  # the converters raise assorted errors on schemas they cannot express
        raise APIError(400, f"{param}: the engine cannot enforce this schema ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else 'unsupported'})", param=param)
    return structure


def _chat_plan(body: ChatRequest, runtime) -> dict:
    """Messages, tools and a forced assistant prefix for a chat request; validated before it is queued."""
    messages = glm_tools.to_glm_messages([m.model_dump(exclude_none=True) for m in body.messages])
    tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
    names = {t["function"]["name"] for t in tools}
    choice = body.tool_choice
    prefix, structure = "", None
    formatted = (body.response_format or {}).get("type", "text") != "text"
    if tools and glm_tools.template_reads_tools(runtime.tokenizer.chat_template) is None:
        raise APIError(400, "this model's chat template has no tools block, so it cannot be told about tools; "
                            "serve a checkpoint whose template describes tools (GLM-4-0414, glm-4-9b-chat)",
                       param="tools")
    if choice is not None and not tools and choice != "none":
        raise APIError(400, "tool_choice needs tools", param="tool_choice")
    if not tools:
        pass
    elif choice == "none":
        names, prefix = set(), "\n"  # GLM-4 marks a plain answer with a newline after <|assistant|>
    elif choice == "required" and len(names) == 1:
        prefix = next(iter(names)) + "\n"  # the template's metadata line, as for a named function
    elif choice == "required":  # the engine's grammar: one declared name, a newline, arguments of its schema
        if formatted:
            raise APIError(400, "response_format and tool_choice 'required' cannot both constrain the answer",
                           param="response_format")
        structure = _check_structure(Structure.tool_call(tools), runtime, "tool_choice")
    elif choice is not None and choice != "auto":
        forced = choice.function.get("name")
        if forced not in names:
            raise APIError(400, f"tool_choice names {forced!r}, which is not among the tools", param="tool_choice")
        prefix = forced + "\n"
    if formatted and not prefix and not structure:
        prefix = "\n"  # GLM-4 opens a plain answer with a newline; the JSON follows it
    ids = runtime.prompt_ids(messages, tools=tools or None, assistant_prefix=prefix)
    config = _config(body, runtime, body.max_completion_tokens or body.max_tokens, ids)
    if structure is not None:
        config = dataclasses.replace(config, structure=structure)
    return {"prompt": messages, "tools": tools or None, "prefix": prefix, "names": names, "config": config}


def _usage(result: GenerationResult) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": len(result.token_ids),
            "total_tokens": result.prompt_tokens + len(result.token_ids),
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens}}


def _tool_calls(calls) -> list[dict]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in calls]


async def _respond(request: Request, engine: Engine, body, plan: dict, name: str, chat: bool):
    cancel = threading.Event()
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    runtime = engine.runtime

    def start():
        return runtime.stream(plan["prompt"], plan["config"], tools=plan["tools"], assistant_prefix=plan["prefix"])

    events = engine.events(start, cancel)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        first = await _first(events)  # errors before the first event (busy, engine failure) are HTTP errors
        return StreamingResponse(_sse(request, events, first, plan, rid, created, name, chat, include_usage, cancel),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    text, reasoning, result = [], [], None
    async for event in events:
        if isinstance(event, TextDelta):
            (reasoning if event.reasoning else text).append(event.text)
        else:
            result = event
        if await request.is_disconnected():
            cancel.set()
            break
    if result is None:
        raise APIError(499, "client closed the request", kind="client_closed")
    if not chat:
        return {"id": rid, "object": "text_completion", "created": created, "model": name,
                "choices": [{"index": 0, "text": "".join(text), "logprobs": None,
                             "finish_reason": FINISH[result.finish_reason]}], "usage": _usage(result)}
    answer = plan["prefix"] + "".join(text)  # the runtime already dropped the "\n" of a plain answer
    content, calls = glm_tools.parse(answer, plan["names"]) if plan["names"] else (
        glm_tools.strip_answer(answer) if plan["prefix"] else answer, [])
    message = {"role": "assistant", "content": content if not calls else None}
    if calls:
        message["tool_calls"] = _tool_calls(calls)
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    finish = "tool_calls" if calls else FINISH[result.finish_reason]
    return {"id": rid, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": _usage(result)}


async def _first(events):
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


async def _sse(request, events, first, plan, rid, created, name, chat, include_usage, cancel):
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: dict | None = None, finish=None, usage=None, text: str | None = None) -> str:
        choice = ({"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None} if chat
                  else {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None})
        data = {"id": rid, "object": kind, "created": created, "model": name,
                "choices": [] if usage is not None else [choice]}
        if usage is not None:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    # tools or a forced prefix: the first line decides answer or call; otherwise text streams as the runtime gives it.
    # The prefix (a forced name, or the "\n" of a forced answer) opens the turn, so the router reads it first.
    router = None
    if plan["names"] or plan["prefix"]:
        router = glm_tools.StreamRouter(plan["names"])
        router.feed(plan["prefix"])  # decides nothing visible: a name is held, an answer's "\n" is dropped
    result = None
    try:
        if chat:
            yield chunk({"role": "assistant", "content": ""})
        pending = [] if first is None else [first]
        while True:
            if pending:
                event = pending.pop()
            else:
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    break
            if await request.is_disconnected():
                cancel.set()
                return
            if isinstance(event, GenerationResult):
                result = event
                continue
            if not chat:
                yield chunk(text=event.text)
            elif event.reasoning:
                yield chunk({"reasoning_content": event.text})
            elif router is None:
                yield chunk({"content": event.text})
            elif out := router.feed(event.text):
                yield chunk({"content": out})
        if result is None:
            return
        finish = FINISH[result.finish_reason]
        if chat:
            rest, calls = router.finish() if router is not None else ("", [])
            if rest:
                yield chunk({"content": rest})
            for i, call in enumerate(calls):
                yield chunk({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                                             "function": {"name": call.name, "arguments": ""}}]})
                yield chunk({"tool_calls": [{"index": i, "function": {"arguments": call.arguments}}]})
            if calls:
                finish = "tool_calls"
            yield chunk({}, finish=finish)
        else:
            yield chunk(text="", finish=finish)
        if include_usage:
            yield chunk(usage=_usage(result))
        yield "data: [DONE]\n\n"
    except APIError as e:
        yield f"data: {json.dumps(e.body())}\n\n"
    except GlmkitError as e:
        yield f"data: {json.dumps(APIError(400, str(e)).body())}\n\n"
    except Exception as e:  # after the 200 is sent, an error can only be an event
        log.exception("error while streaming")
        yield f"data: {json.dumps(APIError(500, f'internal error ({type(e).__name__})', kind='server_error').body())}\n\n"
    finally:
        cancel.set()
        await events.aclose()
