"""One streamed request to an OpenAI-compatible server, timed chunk by chunk."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from lucid.bench.prompts import BenchRequest
from lucid.bench.stats import RequestResult

ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


@dataclass
class Target:
    """Where and how to send: the server, the model name, the API, and fields added to every request body."""

    url: str
    model: str
    endpoint: str = "completions"            # "chat" or "completions"
    api_key: str | None = None
    temperature: float = 0.0
    extra_body: dict[str, Any] = field(default_factory=dict)

    def body(self, request: BenchRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model, "stream": True, "stream_options": {"include_usage": True},
            "max_tokens": request.output_len, "temperature": self.temperature,
            "ignore_eos": True,  # vLLM / lucid: generate exactly max_tokens; other servers ignore the field
        }
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        return {**body, **self.extra_body}

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _finish_reason(chunk: dict[str, Any]) -> str | None:
    return next((c["finish_reason"] for c in chunk.get("choices") or [] if c.get("finish_reason")), None)


def _chunk_text(chunk: dict[str, Any]) -> str:
    """The generated text a chunk carries (chat: the delta's content; completions: the text)."""
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta")
        text += (delta.get("content") or "") if isinstance(delta, dict) else (choice.get("text") or "")
    return text


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
        return str(error.get("message") if isinstance(error, dict) else error or body[:200])
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")


async def send(client: httpx.AsyncClient, target: Target, request: BenchRequest, t0: float) -> RequestResult:
    """Send one request and time it; never raises for HTTP or transport failures (they become the result's status).

    TTFT is the time to the first chunk that carries text (chat's opening role-only chunk does not count).
    """
    start = time.perf_counter()
    result = RequestResult(ok=False, status="", start=start - t0, requested_tokens=request.output_len)
    chunk_times: list[float] = []
    usage: dict[str, Any] | None = None
    finish: str | None = None
    try:
        async with client.stream("POST", target.url + ENDPOINTS[target.endpoint], json=target.body(request),
                                 headers=target.headers()) as response:
            result.status = str(response.status_code)
            if response.status_code != 200:
                result.error = _error_message(await response.aread())
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.status, result.error = "stream-error", str(chunk["error"])[:200]
                    return result
                if _chunk_text(chunk):
                    chunk_times.append(time.perf_counter())
                usage = chunk.get("usage") or usage
                finish = _finish_reason(chunk) or finish
    except httpx.TimeoutException as exc:
        result.status, result.error = "timeout", repr(exc)
        return result
    except (httpx.HTTPError, ValueError) as exc:
        result.status, result.error = type(exc).__name__, str(exc)[:200]
        return result
    result.latency = time.perf_counter() - start
    if not chunk_times:
        result.status, result.error = "empty", "the stream carried no text"
        return result
    result.ok = True
    result.ttft = chunk_times[0] - start
    result.itl = [b - a for a, b in zip(chunk_times, chunk_times[1:])]
    result.prompt_tokens = int((usage or {}).get("prompt_tokens") or request.prompt_len or 0)
    result.output_tokens = int((usage or {}).get("completion_tokens") or _counted_tokens(finish, request, chunk_times))
    return result


def _counted_tokens(finish: str | None, request: BenchRequest, chunk_times: list[float]) -> int:
    """Output tokens without a usage chunk: all that were asked for if the answer stopped at the length limit,
    else one per text chunk (a chunk can hold more than one token when a character spans tokens)."""
    return request.output_len if finish == "length" else len(chunk_times)
