"""Errors as Ollama shapes them — `{"error": "message"}` with the HTTP status — for every path under /api/.

The official clients read that string (ollama-python raises ResponseError(error, status_code)); OpenAI's nested
object would reach their users as a dict. The gate middleware (401, 413, 503) asks `error_response` too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from lucid.server.errors import APIError, as_api_error

logger = logging.getLogger("lucid.server")

OLLAMA_PREFIX = "/api/"


def ollama_error(error: APIError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)


def error_response(path: str, error: APIError) -> JSONResponse:
    """The answer for `error` on `path`: Ollama's shape under /api/, OpenAI's everywhere else."""
    return ollama_error(error) if path.startswith(OLLAMA_PREFIX) else error.response()


class OllamaRoute(APIRoute):
    """A route whose failures — ours, the engine's, crashes — answer in Ollama's shape (never a 500 for bad input:
    handlers raise APIError 4xx for those)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every failure becomes an Ollama-shaped answer
                error = as_api_error(exc)
                if error.status == 500:
                    logger.error("internal error while serving %s", request.url.path, exc_info=exc)
                return ollama_error(error)

        return shaped
