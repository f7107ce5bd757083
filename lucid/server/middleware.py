"""The gate every HTTP request passes before routing: metrics, API key, admission (503) and the body-size limit.

A plain ASGI middleware rather than FastAPI dependencies, so the order is fixed and explicit: a request without the
key gets 401 before its body is read (or its path is routed), and an oversized body is refused (413) before JSON
parsing sees it.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lucid.server.errors import APIError, body_too_large, unauthorized, unavailable
from lucid.server.ollama_errors import error_response
from lucid.server.state import ServerState

API_PATHS = ("/v1/", "/tokenize", "/detokenize", "/infill", "/completion", "/api/chat",
             "/api/generate")  # need the engine; count as in flight
# With --api-key, every path needs the key except these: the health probe and the chat page (which asks for the key
# and sends it with its own API calls). Unknown paths need it too, so a client without it learns nothing.
OPEN_PATHS = frozenset({"/health", "/", "/engine"})
OPEN_PREFIXES = ("/static/",)
KNOWN_ENDPOINTS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/tokenize", "/detokenize", "/health",
                   "/metrics", "/", "/docs", "/openapi.json", "/infill", "/completion", "/api/chat", "/api/generate",
                   "/api/tags", "/api/show", "/api/version", "/api/ps"}


def _starts(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p.rstrip("/") or path.startswith(p) for p in prefixes)


def needs_key(path: str, method: str) -> bool:
    """Whether a request must carry the API key (when the server has one). CORS preflights never carry it."""
    return method != "OPTIONS" and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def key_matches(given: bytes, expected: bytes) -> bool:
    """Constant-time comparison, so the time to refuse a key says nothing about how much of it was right."""
    return hmac.compare_digest(given, expected)


class GateMiddleware:
    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        key = state.settings.api_key
        self.expected_auth = f"Bearer {key}".encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        endpoint = path if path in KNOWN_ENDPOINTS else "other"
        status_seen: list[int] = []

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
            await send(message)

        is_api = _starts(path, API_PATHS)
        if is_api:
            self.state.in_flight += 1
        try:
            await self._guarded(scope, receive, send_counted, path, is_api)
        finally:
            if is_api:
                self.state.in_flight -= 1
            status = str(status_seen[0]) if status_seen else "disconnected"
            self.state.metrics.requests.labels(endpoint=endpoint, status=status).inc()

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, path: str, is_api: bool) -> None:
        error: APIError | None = None
        if self.expected_auth is not None and needs_key(path, scope["method"]):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not key_matches(given, self.expected_auth):
                error = unauthorized()
        if error is None and is_api:
            reason = self.state.unavailable_reason()
            if reason is not None:
                error = unavailable(reason)
        if error is not None:
            await error_response(path, error)(scope, receive, send)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            receive = await self._limited_body(scope, receive, send)
            if receive is None:
                return
        await self.app(scope, receive, send)

    async def _limited_body(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the whole body (refusing it past the limit), then hand the app a receive that replays it."""
        limit = self.state.settings.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await error_response(scope["path"], body_too_large(limit))(scope, receive, send)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await error_response(scope["path"], body_too_large(limit))(scope, receive, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            # The body once, then the real channel: later receives must still see the client's disconnect.
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay
