"""Server-sent events as OpenAI streams them: `data: {json}` frames, an error frame if it fails, `data: [DONE]`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from lucid.server.errors import as_api_error

logger = logging.getLogger("lucid.server")

DONE = "data: [DONE]\n\n"


def event(data: dict[str, Any]) -> str:
    # ensure_ascii=False keeps Chinese and emoji readable on the wire; allow_nan=False because JSON has no NaN.
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'), allow_nan=False)}\n\n"


def error_event(exc: BaseException) -> str:
    """The frame that ends a failed stream; the openai client raises it as an APIError."""
    error = as_api_error(exc)
    if error.status >= 500:
        logger.error("a stream failed: %s", error.message, exc_info=exc if error.status == 500 else None)
    return event(error.body())


async def _guarded(frames: AsyncIterator[str]) -> AsyncIterator[str]:
    """Frames, then [DONE]; an exception mid-way becomes an error frame first. Closing this (the client left)
    closes `frames`, whose own cleanup aborts the engine requests."""
    try:
        async for frame in frames:
            yield frame
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream itself
        yield error_event(exc)
    finally:
        await frames.aclose()  # type: ignore[attr-defined]
    yield DONE


def event_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_guarded(frames), media_type="text/event-stream", headers=headers)
