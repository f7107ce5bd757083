"""One lucid engine replica: the class Ray Serve runs N copies of (each in its own worker process, `ray::` actor).

Each replica loads the model and runs an AsyncEngine with as many compute threads as the CPUs Serve gave it. A
request streams back ReplicaBatch messages: the first output at once (time to first token), later ones gathered
for up to STREAM_FLUSH_SECONDS, so a fast stream costs one message per few tokens instead of one per token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator

from ray import serve

from lucid.cluster.messages import (
    ReplicaBatch,
    ReplicaFailure,
    ReplicaInfo,
    ReplicaRequest,
    ReplicaSpec,
    stats_dict,
)
from lucid.cluster.stats_board import post_forever
from lucid.engine.outputs import RequestOutput

log = logging.getLogger("lucid.cluster")

STREAM_FLUSH_SECONDS = 0.03   # the longest a generated token waits to share a message with the next ones
STREAM_MAX_OUTPUTS = 16       # ... and the most outputs one message carries


class LucidReplica:
    def __init__(self, spec: ReplicaSpec) -> None:
        from lucid.engine.async_engine import AsyncEngine  # torch: only in the replica's process

        started = time.perf_counter()
        options = {"dtype": spec.dtype} if spec.dtype else {}
        self.engine = AsyncEngine.from_pretrained(spec.model, device=spec.device, engine_config=spec.engine_config,
                                                  quantization=spec.quantization, **options)
        self.engine.start()
        self.name = serve.get_replica_context().replica_id.unique_id
        self._stop_posting = threading.Event()
        if spec.stats_board is not None:
            post_forever(spec.stats_board, self.name, self.record_routing_stats, self._stop_posting)
        log.info("replica %s: %s loaded in %.1f s", self.name, self.engine.model_name, time.perf_counter() - started)

    def describe(self) -> ReplicaInfo:
        e = self.engine
        return ReplicaInfo(e.tokenizer, e.model_config, e.engine_config, e.generation_config, e.model_name)

    async def generate(self, request: ReplicaRequest) -> AsyncIterator[ReplicaBatch]:
        """The request's outputs in batches. Cancelling this generator (the front's client left, or its replica
        handle was cancelled) closes the engine's, which aborts the request and frees its KV blocks."""
        outputs = self.engine.generate(request.prompt_token_ids, request.params, request.request_id)
        pending: asyncio.Queue[RequestOutput | BaseException | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for out in outputs:
                    pending.put_nowait(out)
                pending.put_nowait(None)
            except Exception as exc:  # handed to the stream below, which sends it as data
                pending.put_nowait(exc)

        task = asyncio.create_task(pump())
        try:
            wait = 0.0  # the first output goes at once: it carries the time to first token
            while True:
                batch = ReplicaBatch(self.name)
                done = _add(batch, await pending.get())
                deadline = time.monotonic() + wait
                while not done and len(batch.outputs) < STREAM_MAX_OUTPUTS:
                    try:
                        item = await _next(pending, deadline - time.monotonic())
                    except TimeoutError:
                        break
                    done = _add(batch, item)
                if batch.outputs or batch.error:
                    yield batch
                if done:
                    return
                wait = STREAM_FLUSH_SECONDS
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await outputs.aclose()

    def check_health(self) -> None:
        """Serve calls this every few seconds; raising makes it replace the replica."""
        if self.engine.dead_error is not None:
            raise RuntimeError(f"the engine has stopped: {self.engine.dead_error}")

    def record_routing_stats(self) -> dict[str, int]:
        """The engine's counters: Serve ships them to every router; the stats board to the front's /metrics."""
        return {**stats_dict(self.engine.stats()), "pid": os.getpid()}

    def __del__(self) -> None:  # Serve calls it when it stops the replica (scale down, shutdown)
        if hasattr(self, "_stop_posting"):
            self._stop_posting.set()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def _add(batch: ReplicaBatch, item: RequestOutput | BaseException | None) -> bool:
    """Put one item of the engine's stream into `batch`; True when the stream has ended."""
    if item is None:
        return True
    if isinstance(item, BaseException):
        batch.error = _failure(item)
        return True
    batch.outputs.append(item)
    return item.finished


async def _next(pending: asyncio.Queue, timeout: float) -> RequestOutput | BaseException | None:
    """The next queued item, waiting at most `timeout` seconds (TimeoutError after)."""
    if not pending.empty():
        return pending.get_nowait()
    if timeout <= 0:
        raise TimeoutError
    return await asyncio.wait_for(pending.get(), timeout)


def _failure(exc: BaseException) -> ReplicaFailure:
    return ReplicaFailure(type(exc).__name__, str(exc), getattr(exc, "param", None))
