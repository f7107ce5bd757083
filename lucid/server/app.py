"""The FastAPI application: routes, the gate middleware, CORS, error handlers, and the engine's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from lucid.server import llamacpp, ollama, serving_chat, serving_completions, serving_tokenize
from lucid.server.docs_page import install_offline_docs
from lucid.server.errors import RETRY_AFTER_SECONDS, install_error_handlers
from lucid.server.generation import max_model_len
from lucid.server.glassbox import GLASSBOX_BODIES, install_glassbox
from lucid.server.middleware import GateMiddleware
from lucid.server.openapi import ERROR_RESPONSES, install_openapi, request_body
from lucid.server.protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from lucid.server.state import ServerSettings, ServerState

logger = logging.getLogger("lucid.server")

STATIC_DIR = Path(__file__).parent / "static"
PLACEHOLDER_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>lucid</title></head>
<body><h1>lucid</h1><p>The OpenAI-compatible API is at <code>/v1</code>; its documentation at
<a href="/docs">/docs</a>.</p></body></html>"""


def public_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}"


def _log_exposure(settings: ServerSettings) -> None:
    """Say who can reach the server: loopback only (the default), or the network, and whether a key guards it."""
    host = settings.host
    if host in ("127.0.0.1", "::1", "localhost"):
        logger.info("Listening on %s:%d: only this machine can connect (--host 0.0.0.0 opens it to the network)",
                    host, settings.port)
        return
    logger.warning("Listening on %s:%d: other machines can connect%s", host or "0.0.0.0", settings.port,
                   "" if settings.api_key else "; no --api-key is set, so anyone who can reach it may use it")


def build_app(state: ServerState) -> FastAPI:
    """An app serving `state`'s engine; loading starts with the app's lifespan, so /health answers at once."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load())
        base = public_url(state.settings.host, state.settings.port)
        logger.info("lucid is up: API %s/v1 · docs %s/docs · chat page %s/ (answers 503 until the model is loaded)",
                    base, base, base)
        _log_exposure(state.settings)
        try:
            yield
        finally:
            loading.cancel()
            state.shutdown()

    app = FastAPI(title="lucid", version="0.1.0", lifespan=lifespan, docs_url=None,
                  description="An OpenAI-compatible server for Qwen2-family models.")
    app.state.lucid = state
    install_error_handlers(app)
    install_openapi(app, [ChatCompletionRequest, CompletionRequest, TokenizeRequest, DetokenizeRequest,
                          *GLASSBOX_BODIES])
    app.add_middleware(GateMiddleware, state=state)
    if state.settings.allowed_origins:  # added last, so outermost: preflight requests never meet the key check
        app.add_middleware(CORSMiddleware, allow_origins=state.settings.allowed_origins, allow_methods=["*"],
                           allow_headers=["*"])
    _add_api_routes(app, state)
    # Other projects' APIs, documented by them (left out of /openapi.json, which describes lucid's own):
    app.include_router(llamacpp.build_router(state), include_in_schema=False)  # /infill, /completion: editors
    app.include_router(ollama.build_router(state), include_in_schema=False)    # /api/*: Ollama's clients
    _add_service_routes(app, state)
    install_glassbox(app, state, STATIC_DIR)
    install_offline_docs(app)
    return app


def _add_api_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/v1/chat/completions", tags=["OpenAI"], responses=ERROR_RESPONSES,
              openapi_extra=request_body(ChatCompletionRequest))
    async def chat_completions(request: Request) -> Response:
        """Chat completion (OpenAI's shape); `stream: true` answers with server-sent events."""
        return await serving_chat.create_chat_completion(request, state)

    @app.post("/v1/completions", tags=["OpenAI"], responses=ERROR_RESPONSES,
              openapi_extra=request_body(CompletionRequest))
    async def completions(request: Request) -> Response:
        """Text completion (OpenAI's legacy shape); `stream: true` answers with server-sent events."""
        return await serving_completions.create_completion(request, state)

    @app.get("/v1/models", tags=["OpenAI"], responses=ERROR_RESPONSES)
    async def models() -> JSONResponse:
        """The served model, under the first --served-model-name."""
        engine = state.require_engine()
        card = {"id": state.served_names[0], "object": "model", "created": int(time.time()), "owned_by": "lucid",
                "root": engine.model_name, "parent": None, "max_model_len": max_model_len(engine)}
        return JSONResponse({"object": "list", "data": [card]})

    @app.post("/tokenize", tags=["vLLM"], responses=ERROR_RESPONSES, openapi_extra=request_body(TokenizeRequest))
    async def tokenize(request: Request) -> JSONResponse:
        """Token ids of `prompt`, or of `messages` rendered through the chat template."""
        return await serving_tokenize.tokenize(request, state)

    @app.post("/detokenize", tags=["vLLM"], responses=ERROR_RESPONSES,
              openapi_extra=request_body(DetokenizeRequest))
    async def detokenize(request: Request) -> JSONResponse:
        """The text of `tokens`."""
        return await serving_tokenize.detokenize(request, state)


def _add_service_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health", tags=["service"], responses={503: {"description": "Loading, draining or engine stopped."}})
    async def health() -> JSONResponse:
        """200 when the model is loaded and the engine runs; 503 (with Retry-After) otherwise."""
        reason = state.unavailable_reason()
        if reason is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": state.phase if state.phase != "ready" else "dead", "message": reason},
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.get("/metrics", tags=["service"], response_class=Response,
             responses={401: ERROR_RESPONSES[401]})
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    index = STATIC_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        if index.is_file():
            return FileResponse(index)
        return HTMLResponse(PLACEHOLDER_PAGE)

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
