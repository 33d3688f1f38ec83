"""glm-serve's ASGI app: OpenAI's /v1/chat/completions, /v1/completions and /v1/models over one glmkit runtime.

    from glmkit.serve import create_app
    app = create_app(load("glm4-tiny-ov"), api_key="…")    # any ASGI server runs it; glm-serve uses uvicorn

GLM-4 specifics live in glmkit.glm4 (template, tool calls, Z1 reasoning, the output parser) and the runtime (stop
tokens); plan.py turns a request into one typed plan (prompt rendered once, sampling, grammar); this module serves
the plan's events over the OpenAI protocol and answers every bad request with a 4xx error object.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from glmkit.glm4 import families
from glmkit.glm4.errors import GlmkitError

from .admission import Admission
from .guard import Guard, error_response
from .plan import ImagePolicy, check_text, plan_chat, plan_completion
from .protocol import APIError, ChatRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from .respond import respond

log = logging.getLogger("glmkit.serve")
MAX_BODY_BYTES = 4 * 2**20  # a long chat with tools is kilobytes; anything near this is a mistake or an attack
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
                "prompt_cache": runtime.prompt_cache_stats(), **(runtime.image_stats() or {})}

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
        return await respond(request, admission, plan_chat(body, runtime, image_policy), name)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        _check_model(body.model, name)
        return await respond(request, admission, plan_completion(body, runtime), name)

    return app


def _check_model(given: str, name: str) -> None:
    if given != name:
        raise APIError(404, f"model {given!r} is not served here; this server serves {name!r} (GET /v1/models)",
                       param="model", code="model_not_found")


def _model_card(name: str, runtime, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "glmkit", "backend": runtime.backend,
            "context_length": runtime.context_length}
