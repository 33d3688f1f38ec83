"""glm-serve's ASGI app: OpenAI's /v1/chat/completions, /v1/completions and /v1/models over one glmkit runtime.

    from glmkit.serve import create_app
    app = create_app(load("glm4-tiny-ov"), api_key="…")    # any ASGI server runs it; glm-serve uses uvicorn

GLM-4 specifics live in glmkit.glm4 (template, tool calls, Z1 reasoning, the output parser) and the runtime (stop
tokens); plan.py turns a request into one typed plan (prompt rendered once, sampling, grammar); this module serves
the plan's events over the OpenAI protocol and answers every bad request with a 4xx error object.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError
from glmkit.glm4.toolcalls import ToolCall
from glmkit.runtimes import GenerationResult, TextDelta

from . import logprobs as logprob_objects
from .admission import Admission
from .guard import Guard, error_response
from .plan import ImagePolicy, RequestPlan, check_text, plan_chat, plan_completion
from .protocol import APIError, ChatRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest

log = logging.getLogger("glmkit.serve")
MAX_BODY_BYTES = 4 * 2**20  # a long chat with tools is kilobytes; anything near this is a mistake or an attack
FINISH = {"stop": "stop", "stop_string": "stop", "length": "length", "interrupted": "stop"}
STATIC = Path(__file__).parent / "static"  # the chat page: plain files, no build step, nothing from a CDN


def create_app(runtime, model_name: str | None = None, api_key: str | None = None, max_queue: int = 8,
               cors: list[str] | None = None, max_body_bytes: int = MAX_BODY_BYTES,
               image_policy: ImagePolicy | None = None) -> FastAPI:
    """The app serving `runtime` (from glmkit.runtimes.load; load(parallel=N) to batch N requests at once) as
    model `model_name`; up to `max_queue` more requests wait, the rest get 429. A GLM-4V runtime takes image_url
    parts as `image_policy` allows (data: URLs within limits; remote URLs only when it says so)."""
    name = model_name or runtime.name
    image_policy = image_policy or ImagePolicy()
    if runtime.capabilities.images:  # room for one image, base64-encoded, beside the text
        max_body_bytes = max(max_body_bytes, MAX_BODY_BYTES + image_policy.max_bytes * 4 // 3 + 1024)
    admission = Admission(runtime, max_queue)
    @asynccontextmanager
    async def lifespan(app):
        yield
        admission.close()

    app = FastAPI(title="glm-serve", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.admission = admission
    created = int(time.time())

    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors, allow_methods=["*"], allow_headers=["*"])

    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)  # outermost: before any body is read

    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":  # its loc is a byte offset, not a field
            at = [x for x in first.get("loc", ()) if isinstance(x, int)]
            return error_response(APIError(400, "the body is not valid JSON" + (f" (at byte {at[0]})" if at else "")))
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = first.get("msg", "invalid request")
        return error_response(APIError(400, f"{where + ': ' if where else ''}{message}", param=where or None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        """Routing and parsing errors as OpenAI error objects, like every other error."""
        message = {404: f"no route {request.url.path}; glm-serve serves /v1/chat/completions, /v1/completions, "
                        "/v1/models and /health",
                   405: f"{request.method} is not allowed on {request.url.path}",
                   400: "the body is not valid UTF-8 JSON"}.get(e.status_code, str(e.detail))
        return error_response(APIError(e.status_code, message, headers=getattr(e, "headers", None)))

    @app.exception_handler(GlmkitError)
    async def glmkit_error(request, e: GlmkitError):
        return error_response(APIError(400, str(e)))

    @app.exception_handler(Exception)
    async def unexpected(request, e: Exception):
        log.exception("unexpected error")  # the server log has the traceback; the client never does
        return error_response(APIError(500, f"internal error ({type(e).__name__}); see the server log",
                               kind="server_error"))

    default_openapi = app.openapi

    def openapi() -> dict:
        """The schema names the one model served, so clients (and schema-driven testers) can know it."""
        schema = default_openapi()
        for body in ("ChatRequest", "CompletionRequest"):
            schema["components"]["schemas"][body]["properties"]["model"]["enum"] = [name]
        return schema

    setattr(app, "openapi", openapi)  # noqa: B010  (FastAPI's documented override; mypy reads it as a method)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "backend": runtime.backend,
                "device": getattr(runtime, "device", "CPU"), "images": runtime.capabilities.images,
                "requests_in_progress": admission.admitted, "generating": admission.generating,
                "max_concurrency": admission.workers, "peak_generating": admission.peak,
                "generations_finished": admission.finished, "generations_cancelled": admission.cancelled,
                "prompt_cache": runtime.prompt_cache_stats()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(name, runtime, created)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        _check_model(model_id, name)
        return _model_card(name, runtime, created)

    # vLLM's tokenizer endpoints: lm-evaluation-harness (tokenizer_backend=remote, its default where a server
    # has them) counts context and continuation tokens with the served model's own tokenizer
    @app.get("/tokenizer_info")
    async def tokenizer_info():
        return {"eos_token": families.EOS_TOKEN, "bos_token": None, "pad_token": families.PAD_TOKEN,
                "chat_template": runtime.tokenizer.chat_template, "model_max_length": runtime.context_length}

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest):
        check_text(body.prompt, "prompt")
        ids = runtime.prompt(body.prompt, raw=not body.add_special_tokens).ids
        return {"tokens": ids, "count": len(ids), "max_model_len": runtime.context_length}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        if not all(0 <= t < runtime.tokenizer.vocab_size for t in body.tokens):
            raise APIError(400, f"tokens: ids run from 0 to {runtime.tokenizer.vocab_size - 1}", param="tokens")
        return {"prompt": runtime.tokenizer.decode(body.tokens)}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        _check_model(body.model, name)
        return await _respond(request, admission, plan_chat(body, runtime, image_policy), name)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, name)
        return await _respond(request, admission, plan_completion(body, runtime), name)

    return app


def _check_model(given: str, name: str) -> None:
    if given != name:
        raise APIError(404, f"model {given!r} is not served here; this server serves {name!r} (GET /v1/models)",
                       param="model", code="model_not_found")


def _model_card(name: str, runtime, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "glmkit", "backend": runtime.backend,
            "context_length": runtime.context_length}


def _usage(result: GenerationResult) -> dict:
    usage: dict = {"prompt_tokens": result.prompt_tokens, "completion_tokens": len(result.token_ids),
             "total_tokens": result.prompt_tokens + len(result.token_ids)}
    if result.cached_tokens is not None:  # an engine that does not count its cache hits claims none
        usage["prompt_tokens_details"] = {"cached_tokens": result.cached_tokens}
    proposed, accepted = result.engine.get("proposed"), result.engine.get("accepted")
    if accepted is not None:  # speculative decoding, in OpenAI's predicted-output fields (openvino-genai does not
        usage["completion_tokens_details"] = {"accepted_prediction_tokens": accepted}  # say what it proposed)
        if proposed is not None:
            usage["completion_tokens_details"]["rejected_prediction_tokens"] = proposed - accepted
    return usage


def _arguments(call, plan: RequestPlan) -> str:
    """A tool declared without parameters takes none: whatever the model wrote after its name is not passed on."""
    return "{}" if call.name in plan.no_arguments else call.arguments


def _tool_calls(calls, plan: RequestPlan) -> list[dict]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments(c, plan)}}
            for c in calls]


@dataclass(frozen=True)
class _Reply:
    """What every chunk or body of one response repeats."""

    id: str
    created: int
    model: str
    chat: bool

    def chunk(self, delta: dict | None = None, finish=None, usage=None, text: str | None = None) -> str:
        choice = ({"index": 0, "delta": delta or {}, "finish_reason": finish, "logprobs": None} if self.chat
                  else {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None})
        data = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [] if usage is not None else [choice]}
        if usage is not None:
            data["usage"] = usage
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _respond(request: Request, admission: Admission, plan: RequestPlan, name: str):
    cancel = threading.Event()
    reply = _Reply(f"{'chatcmpl' if plan.chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time()), name,
                   plan.chat)
    runtime = admission.runtime

    def start():
        return _run(runtime, plan)

    events = admission.events(start, cancel)
    if plan.stream:
        first = await _first(events)  # errors before the first event (busy, engine failure) are HTTP errors
        return StreamingResponse(_sse(request, events, first, plan, reply, cancel),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # nginx: pass on
    text: list[str] = []
    reasoning: list[str] = []
    result, scored = None, None
    async for event in events:
        if isinstance(event, TextDelta):
            (reasoning if event.reasoning else text).append(event.text)
        elif isinstance(event, GenerationResult):
            result = event
        elif isinstance(event, _Scored):
            scored = event
        if await request.is_disconnected():
            cancel.set()
            break
    if result is None:
        raise APIError(499, "client closed the request", kind="client_closed")
    if not plan.chat:
        answer, n_prompt = "".join(text), len(plan.prompt.ids)
        start_at = n_prompt if plan.echo_from is None else plan.echo_from
        echoed = "" if plan.echo_from is None else runtime.tokenizer.decode(plan.prompt.ids[plan.echo_from:])
        lp = None if scored is None else logprob_objects.completion(
            runtime.tokenizer, scored.tokens[start_at:], scored.ids[start_at:])
        return {"id": reply.id, "object": "text_completion", "created": reply.created, "model": name,
                "choices": [{"index": 0, "text": echoed + answer, "logprobs": lp,
                             "finish_reason": FINISH[result.finish_reason]}], "usage": _usage(result)}
    calls = result.tool_calls
    message: dict = {"role": "assistant", "content": "".join(text) if not calls else None}
    if calls:
        message["tool_calls"] = _tool_calls(calls, plan)
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    finish = "tool_calls" if calls else FINISH[result.finish_reason]
    return {"id": reply.id, "object": "chat.completion", "created": reply.created, "model": name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish,
                         "logprobs": None if scored is None else logprob_objects.chat(
                             runtime.tokenizer, scored.tokens[len(plan.prompt.ids):len(plan.prompt.ids)
                                                              + len(result.token_ids)])}],
            "usage": _usage(result)}


@dataclass(frozen=True)
class _Scored:
    """The raw logprobs of a request's prompt and answer (Runtime.score), after its answer."""

    ids: list[int]
    tokens: list


def _run(runtime, plan: RequestPlan):
    """The answer's events (none where max_tokens is 0), then, where logprobs were asked, the scores of the
    prompt and the answer — the stop token that ended it included, as the legacy completions list has it."""
    if plan.config.max_new_tokens == 0:  # echo alone: the prompt's logprobs, nothing generated
        result = GenerationResult(text="", token_ids=[], finish_reason="length", prompt_tokens=len(plan.prompt.ids),
                                  ttft_ms=0.0, prefill_tps=0.0, decode_tps=0.0, peak_rss_mb=0.0, cached_tokens=None)
        yield result
    else:
        result = None
        for event in runtime.stream(plan.prompt, plan.config):  # rendered once, in the plan
            if isinstance(event, GenerationResult):
                result = event
            yield event
    if plan.logprobs is not None and result is not None:
        ids = [*plan.prompt.ids, *result.token_ids, *([result.stop_token] if result.stop_token is not None else [])]
        yield _Scored(ids, runtime.score(ids, plan.logprobs))


async def _first(events):
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


async def _sse(request, events, first, plan: RequestPlan, reply: _Reply, cancel):
    """The runtime's events as server-sent events: text and reasoning as they come, each tool call whole once the
    turn's calls are known (the output parser holds a call until it parses)."""
    chunk = reply.chunk
    result, n_calls = None, 0
    try:
        if plan.chat:
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
            elif isinstance(event, ToolCall):
                yield chunk({"tool_calls": [{"index": n_calls, "id": event.id, "type": "function",
                                             "function": {"name": event.name, "arguments": ""}}]})
                yield chunk({"tool_calls": [{"index": n_calls, "function": {"arguments": _arguments(event, plan)}}]})
                n_calls += 1
            elif not plan.chat:
                yield chunk(text=event.text)
            elif event.reasoning:
                yield chunk({"reasoning_content": event.text})
            else:
                yield chunk({"content": event.text})
        if result is None:
            return
        finish = "tool_calls" if result.tool_calls else FINISH[result.finish_reason]
        yield chunk({}, finish=finish) if plan.chat else chunk(text="", finish=finish)
        if plan.include_usage:
            yield chunk(usage=_usage(result))
        yield "data: [DONE]\n\n"
    except APIError as e:
        yield f"data: {json.dumps(e.body())}\n\n"
    except GlmkitError as e:
        yield f"data: {json.dumps(APIError(400, str(e)).body())}\n\n"
    except Exception as e:  # after the 200 is sent, an error can only be an event
        log.exception("error while streaming")
        body = APIError(500, f"internal error ({type(e).__name__})", kind="server_error").body()
        yield f"data: {json.dumps(body)}\n\n"
    finally:
        cancel.set()
        await events.aclose()
