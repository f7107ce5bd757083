"""The engine on its own thread, fed and read by asyncio code (the server).

One thread owns the model and loops: take new requests and aborts from an inbox, step, hand each
RequestOutput to its request's asyncio queue with `call_soon_threadsafe`. A consumer that stops
reading (client gone, task cancelled) aborts its request, which frees its KV blocks at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from lucid.config import EngineConfig
from lucid.engine.llm_engine import LLMEngine
from lucid.engine.outputs import EngineStats, RequestOutput
from lucid.engine.subscription import Subscriber, Subscriptions, settle
from lucid.errors import EngineDeadError, QueueFullError
from lucid.sampling_params import SamplingParams

log = logging.getLogger("lucid.engine")


class AsyncEngine(Subscriptions):
    def __init__(self, engine: LLMEngine) -> None:
        super().__init__()
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_config = engine.model_config
        self.engine_config = engine.engine_config
        self.generation_config = engine.generation_config
        self.model_name = engine.model_name
        self.source_path = engine.source_path
        self.dead_error: BaseException | None = None
        # Called (from the engine thread) once the loop has died and every waiting request has its error; the
        # server uses it to exit non-zero, so a supervisor restarts it instead of it idling with /health at 503.
        self.on_death: Callable[[BaseException], None] | None = None
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending_adds = 0
        self._stats = engine.stats()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_pretrained(cls, model: str | None = None, dtype: str = "bfloat16", device: str = "cpu",
                        engine_config: EngineConfig | None = None, quantization: str = "none",
                        prepare_tokenizer: bool = True) -> AsyncEngine:
        return cls(LLMEngine.from_pretrained(model, dtype=dtype, device=device, engine_config=engine_config,
                                             quantization=quantization, prepare_tokenizer=prepare_tokenizer))

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lucid-engine", daemon=True)
            self._thread.start()

    def shutdown(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.dead_error is None

    # ---- requests ----------------------------------------------------------------------------------
    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        sub = Subscriber(asyncio.get_running_loop(), asyncio.Queue())
        self._admit(request_id, prompt_token_ids, params, sub)
        async for item in self._follow(request_id, sub):
            yield item

    def _admit(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams, subscriber: Any) -> None:
        """Validate the request (raises the 4xx errors), check the queue, and hand it to the engine thread, which
        publishes its outputs to `subscriber` (`_publish`)."""
        prepared = self.engine.prepare_params(list(prompt_token_ids), params)
        with self._lock:
            # Checked under the lock the dying loop takes to list subscribers: a request is either in that list
            # (and gets the error) or sees dead_error here; none can wait forever on a loop that is gone.
            if self.dead_error is not None:
                raise EngineDeadError(f"the engine has stopped: {self.dead_error}")
            # Sequences not yet running, less the free slots of the running batch (a burst arriving at an idle
            # engine is all "pending" for a moment, yet up to max_num_seqs of it will run at once, not wait).
            free_slots = max(0, self.engine_config.max_num_seqs - self._stats.num_running)
            waiting = self._stats.num_waiting + self._pending_adds - free_slots
            if waiting >= self.engine_config.max_queue:
                raise QueueFullError(f"the waiting queue is full ({waiting} requests); retry later")
            if request_id in self._subscribers:
                raise ValueError(f"request id {request_id!r} is already in use")
            self._pending_adds += prepared.n
            self._subscribers[request_id] = subscriber
        self._inbox.put(("add", request_id, list(prompt_token_ids), prepared))
        self._wake.set()

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))
        self._wake.set()

    def abort_completion(self, request_id: str, index: int) -> None:
        """Stop one completion of a request at the next step (LLMEngine.abort_completion). Thread-safe."""
        self._inbox.put(("abort_completion", request_id, index))
        self._wake.set()

    def stats(self) -> EngineStats:
        return self._stats

    async def call(self, fn: Callable[[LLMEngine], Any]) -> Any:
        """Run `fn(engine)` on the engine thread between two steps (so it sees consistent tables and may use the
        model and the KV pool) and return its result."""
        if self.dead_error is not None:
            raise EngineDeadError(f"the engine has stopped: {self.dead_error}")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._inbox.put(("call", fn, loop, future))
        self._wake.set()
        return await future

    async def compile_grammar(self, spec: Any) -> None:
        """Compile (or find cached) a request's grammar off the engine thread and the event loop, so that a bad
        one is a 400 before anything is queued (StructuredOutputError) and a first compile stalls nothing."""
        await asyncio.to_thread(self.engine.grammars.compile, spec)

    # ---- the engine thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._drain_inbox()
                if not self.engine.has_unfinished():
                    self._turn_done()
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                outputs = self.engine.step()
                self._stats = self.engine.stats()
                for out in outputs:
                    self._publish(out.request_id, out)
                self._turn_done()
        except BaseException as exc:  # the loop itself broke: every request fails, /health turns 503
            log.exception("engine loop died: %s: %s", type(exc).__name__, exc)
            with self._lock:
                self.dead_error = exc
                subscribers = list(self._subscribers)
            for request_id in subscribers:
                self._publish(request_id, EngineDeadError(f"the engine has stopped: {exc}"))
            if self.on_death is not None:
                self.on_death(exc)

    def _drain_inbox(self) -> None:
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                break
            if command[0] == "add":
                _, request_id, prompt, params = command
                with self._lock:
                    self._pending_adds -= params.n
                    wanted = request_id in self._subscribers
                if wanted:  # not already aborted while it sat in the inbox
                    try:
                        self.engine.add_request(request_id, prompt, params, prepared=True)
                    except Exception as exc:
                        self._publish(request_id, exc)
            elif command[0] == "call":  # a look inside (glass box) that must run between two steps
                _, fn, loop, future = command
                try:
                    result, error = fn(self.engine), None
                except Exception as exc:
                    result, error = None, exc
                self._answer(loop, future, result, error)
            else:
                out = (self.engine.abort_completion(command[1], command[2]) if command[0] == "abort_completion"
                       else self.engine.abort(command[1]))
                if out is not None:
                    self._publish(out.request_id, out)
        self._stats = self.engine.stats()

    # ---- where results go (_publish: Subscriptions'; lucid.engine.engine_process sends them down a pipe) --
    def _answer(self, loop: Any, future: Any, result: Any, error: BaseException | None) -> None:
        loop.call_soon_threadsafe(settle, future, result, error)

    def _turn_done(self) -> None:
        """After each turn of the engine loop (a step's outputs published, or the inbox drained while idle)."""

