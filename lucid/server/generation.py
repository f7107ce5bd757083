"""Running engine requests for HTTP handlers: start them (engine errors become 4xx/5xx before any byte is sent),
watch the client while waiting, record latency metrics, and always abort what the client no longer wants."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, TypeVar

from fastapi import Request

from lucid.engine.outputs import CompletionOutput, RequestOutput
from lucid.sampling_params import SamplingParams
from lucid.server.errors import APIError, as_api_error, unavailable
from lucid.server.state import ServerState

if TYPE_CHECKING:
    from lucid.engine.async_engine import AsyncEngine

T = TypeVar("T")
CLIENT_CLOSED = 499  # nginx's "client closed request": only our own metrics ever see it


def client_gone() -> APIError:
    return APIError(CLIENT_CLOSED, "The client closed the connection.", type_="client_disconnected")


async def generate(state: ServerState, engine: AsyncEngine, prompt_ids: list[int], params: SamplingParams,
                   request_id: str) -> AsyncIterator[RequestOutput]:
    """The engine's outputs for one request, timed into the metrics. Closing this generator (or cancelling the
    task that iterates it) closes the engine's, which aborts the request and frees its KV blocks."""
    metrics = state.metrics
    arrival = time.perf_counter()
    last_token_at: float | None = None
    outputs = engine.generate(prompt_ids, params, request_id)
    try:
        async for out in outputs:
            now = time.perf_counter()
            new_tokens = sum(len(c.delta_token_ids) for c in out.outputs)
            if new_tokens:
                if last_token_at is None:
                    metrics.prompt_tokens.inc(len(prompt_ids))
                    metrics.ttft.observe(now - arrival)
                else:
                    metrics.itl.observe(now - last_token_at)
                metrics.generation_tokens.inc(new_tokens)
                last_token_at = now
            if out.finished:
                metrics.e2e.observe(now - arrival)
                for c in out.outputs:
                    metrics.finished.labels(finish_reason=c.finish_reason or "unknown").inc()
            yield out
    finally:
        aclose = getattr(outputs, "aclose", None)
        if aclose is not None:
            await aclose()


async def _client_left(request: Request) -> None:
    """Return when the client closes the connection. The body has been read, so the next message the server sends
    this request is http.disconnect: waiting for it notices a departure at once, where polling would lag."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, but cancel it (aborting its engine requests) as soon as the client goes away."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_left(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # let the aborts run before we answer
        raise client_gone()
    finally:
        watcher.cancel()
        if not task.done():  # we were cancelled ourselves
            task.cancel()


async def _first(gen: AsyncIterator[RequestOutput]) -> RequestOutput:
    try:
        return await anext(gen)
    except StopAsyncIteration:
        raise APIError(500, "The engine ended the request without output.", type_="server_error") from None


async def start_all(request: Request, gens: list[AsyncIterator[RequestOutput]]) -> list[RequestOutput]:
    """The first output of every request, so that queue-full, context or parameter errors of the engine become an
    HTTP status. If any fails (or the client leaves), all are closed, which aborts those already admitted."""

    async def firsts() -> list[RequestOutput]:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(_first(g)) for g in gens]
        except BaseExceptionGroup as eg:  # the first real error, not the group
            raise eg.exceptions[0] from None
        return [t.result() for t in tasks]

    try:
        return await until_disconnect(request, firsts())
    except BaseException as exc:
        await asyncio.gather(*(g.aclose() for g in gens), return_exceptions=True)  # type: ignore[attr-defined]
        if not isinstance(exc, Exception):  # cancelled: nothing to answer
            raise
        raise as_api_error(exc) from exc


async def collect(first: RequestOutput, gen: AsyncIterator[RequestOutput]) -> tuple[RequestOutput, list[list]]:
    """Drain a request: its last output (full texts) and, per completion, all its token logprobs."""
    last = first
    while not last.finished:
        try:
            last = await anext(gen)
        except StopAsyncIteration:
            break
    # A finished completion carries the logprobs of all its tokens (the engine keeps them).
    return last, [c.logprobs or [] for c in last.outputs]


async def collect_all(firsts: list[RequestOutput], gens: list[AsyncIterator[RequestOutput]]
                      ) -> list[tuple[RequestOutput, list[list]]]:
    """`collect` for several requests at once; one failing (or the caller being cancelled) stops them all."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(collect(f, g)) for f, g in zip(firsts, gens, strict=True)]
    except BaseExceptionGroup as eg:  # an engine failure mid-way: the same answers as at the start
        first = eg.exceptions[0]
        raise (as_api_error(first) if isinstance(first, Exception) else first) from None
    finally:
        await asyncio.gather(*(g.aclose() for g in gens), return_exceptions=True)  # type: ignore[attr-defined]
    return [t.result() for t in tasks]


def check_finished(output: CompletionOutput) -> None:
    """Raise the error for a completion the engine ended abnormally ('abort' on shutdown, 'error' on failure)."""
    if output.finish_reason == "abort":
        raise unavailable("The request was aborted by the server (it is shutting down).")
    if output.finish_reason == "error":
        raise APIError(500, f"Generation failed: {output.error or 'engine error'}", type_="server_error")


async def merge(firsts: list[RequestOutput], gens: list[AsyncIterator[RequestOutput]]
                ) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several requests' outputs as they come: (which request, output). Closing it aborts them all."""
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, gen: AsyncIterator[RequestOutput]) -> None:
        try:
            async for out in gen:
                await queue.put((i, out))
            await queue.put((i, None))
        except Exception as exc:  # handed to the consumer, which raises it
            await queue.put((i, exc))

    for i, first in enumerate(firsts):
        yield i, first
    pending = {i for i, first in enumerate(firsts) if not first.finished}
    tasks = [asyncio.create_task(pump(i, gens[i])) for i in sorted(pending)]
    try:
        while pending:
            i, item = await queue.get()
            if item is None:
                pending.discard(i)
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
                if item.finished:
                    pending.discard(i)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(g.aclose() for g in gens), return_exceptions=True)  # type: ignore[attr-defined]


def max_model_len(engine: AsyncEngine) -> int:
    return min(engine.engine_config.max_model_len, engine.model_config.max_position_embeddings)
