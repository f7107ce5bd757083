"""Every failure the server reports, as OpenAI's error object: {"error": {"message", "type", "param", "code"}}.

Bad input always ends here as a 4xx: the official openai client retries 5xx answers, so a 500 for a bad request
would make it hammer the server with the same mistake.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lucid.errors import ContextLengthError, EngineDeadError, QueueFullError, SamplingParamsError

logger = logging.getLogger("lucid.server")

RETRY_AFTER_SECONDS = 1


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every non-2xx answer (documented in the OpenAPI schema)."""

    error: ErrorDetail


class APIError(Exception):
    """An error answer: raised anywhere in request handling, rendered by the app's exception handler."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unauthorized() -> APIError:
    return APIError(401, "Missing or invalid API key: send it as 'Authorization: Bearer <key>'.",
                    code="invalid_api_key")


def model_not_found(name: str, served: list[str]) -> APIError:
    return APIError(404, f"The model '{name}' does not exist; this server serves {', '.join(served)}.",
                    param="model", code="model_not_found")


def body_too_large(limit: int) -> APIError:
    return APIError(413, f"The request body is larger than {limit} bytes (--max-body-bytes).",
                    code="request_too_large")


def queue_full() -> APIError:
    return APIError(429, "The server is busy: its waiting queue is full. Retry shortly.", type_="rate_limit_error",
                    code="queue_full", retry_after=RETRY_AFTER_SECONDS)


def unavailable(reason: str) -> APIError:
    return APIError(503, reason, type_="service_unavailable", code="service_unavailable",
                    retry_after=RETRY_AFTER_SECONDS)


def context_length_exceeded(max_model_len: int, prompt_tokens: int, max_tokens: int | None,
                            param: str = "messages") -> APIError:
    if max_tokens is None:
        message = (f"This model's maximum context length is {max_model_len} tokens. However, your prompt has "
                   f"{prompt_tokens} tokens, which leaves no room for the completion.")
    else:
        message = (f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                   f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in the "
                   f"completion). Please reduce the length of the prompt or the completion.")
    return APIError(400, message, param=param, code="context_length_exceeded")


def from_engine_error(exc: BaseException) -> APIError | None:
    """The API error for an exception the engine raises on purpose; None for anything unexpected."""
    if isinstance(exc, QueueFullError):
        return queue_full()
    if isinstance(exc, EngineDeadError):
        return unavailable(f"The engine has stopped: {exc}")
    if isinstance(exc, ContextLengthError):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, SamplingParamsError):
        return bad_request(str(exc), param=exc.param)
    return None


def as_api_error(exc: BaseException) -> APIError:
    """The answer for any exception out of request handling: ours as is, the engine's mapped, others a 500."""
    if isinstance(exc, APIError):
        return exc
    return from_engine_error(exc) or APIError(500, f"Internal error: {type(exc).__name__}: {exc}",
                                              type_="server_error")


def describe_validation_error(exc: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    """One readable message for pydantic's error list, and the top-level field it concerns."""
    errors = exc.errors()
    parts = []
    for err in errors[:3]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) if loc else "body"
        parts.append(f"{where}: {str(err.get('msg', 'invalid value')).removeprefix('Value error, ')}")
    more = f" (and {len(errors) - 3} more errors)" if len(errors) > 3 else ""
    first_loc = [p for p in errors[0].get("loc", ()) if p != "body"] if errors else []
    param = str(first_loc[0]) if first_loc else None
    return "; ".join(parts) + more, param


def install_error_handlers(app: FastAPI) -> None:
    """Render every error — ours, FastAPI's validation (400, never 422), routing's 404/405, crashes — the same way."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_error(exc)
        return bad_request(message, param=param).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        err = APIError(exc.status_code, str(exc.detail), type_=type_)
        response = err.response()
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        error = as_api_error(exc)
        if error.status == 500:
            logger.error("internal error while serving a request", exc_info=exc)
        return error.response()
