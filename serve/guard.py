"""What every request meets before a route: the API key, the body limit on every transport, the page's headers.

Plain ASGI rather than a BaseHTTPMiddleware: a body sent chunked (no Content-Length) is counted while it is read and
refused once over the limit, so nothing past it is parsed or tokenised; and the route receives the client's own
`receive`, so a non-streamed handler sees a disconnect (BaseHTTPMiddleware hides it until the response is done).
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse

from .protocol import APIError

# The page runs only its own scripts and talks only to this server; a model answer is never parsed as HTML.
# data: images: the picture a user attaches to a GLM-4V message, shown from its own bytes (no request is made).
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                                           "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
BODY_METHODS = ("POST", "PUT", "PATCH")


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class Guard:
    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        api = scope["path"].startswith("/v1/")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refused = self._refuse(api, headers)
        if refused is None and "content-length" not in headers and scope["method"] in BODY_METHODS:
            receive, refused = await self._read_counted(receive)
        if refused is not None:
            return await error_response(refused)(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start" and not api:
                message["headers"] = list(message.get("headers", [])) + [
                    (k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refuse(self, api: bool, headers: dict) -> APIError | None:
        if self.api_key and api:  # constant-time compare
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode()):
                return APIError(401, "missing or wrong API key: send Authorization: Bearer KEY",
                                code="invalid_api_key", kind="authentication_error")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return self._too_large()
        return None

    def _too_large(self) -> APIError:
        return APIError(413, f"request body over {self.max_body_bytes} bytes")

    async def _read_counted(self, receive):
        """Read a body of unknown length up to the limit; the route then receives it as one message."""
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return receive, APIError(400, "the client closed the request while sending its body")
            total += len(message.get("body", b""))
            if total > self.max_body_bytes:
                return receive, self._too_large()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the client's own messages (a disconnect)

        return replay, None
