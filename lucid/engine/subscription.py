"""Who waits for which request, for the engines that run beside the server's event loop (AsyncEngine: a thread;
ProcessEngine: a process): each request's outputs go to its own asyncio queue, and its generator reads them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from lucid.engine.outputs import RequestOutput


@dataclass
class Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue


class Subscriptions:
    """The subscribers by request id, under a lock (the engine's side publishes from another thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, Subscriber] = {}

    def abort(self, request_id: str) -> None:
        raise NotImplementedError

    def abort_all(self) -> int:
        """Abort every request in flight (shutdown after the grace period): each gets finish_reason "abort" at the
        next step. Returns how many were aborted. Thread-safe."""
        with self._lock:
            request_ids = list(self._subscribers)
        for request_id in request_ids:
            self.abort(request_id)
        return len(request_ids)

    def _publish(self, request_id: str, item: RequestOutput | BaseException) -> None:
        """Hand `item` to the request's queue, from any thread (nothing if nobody waits for it any more)."""
        with self._lock:
            sub = self._subscribers.get(request_id)
        if sub is not None:
            sub.loop.call_soon_threadsafe(sub.queue.put_nowait, item)

    async def _follow(self, request_id: str, sub: Subscriber) -> AsyncIterator[RequestOutput]:
        """The request's outputs to its last one; an exception published for it is raised (the engine dropped the
        request: nothing to abort); a consumer that stops early (client gone) aborts it."""
        finished = False
        try:
            while True:
                item = await sub.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            with self._lock:
                self._subscribers.pop(request_id, None)
            if not finished:
                self.abort(request_id)


def settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    """Resolve a waiting look's future on its loop (one given up on, by a timeout or a cancel, stays as it is)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
