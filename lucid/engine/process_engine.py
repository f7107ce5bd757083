"""The front's side of an engine in another process (lucid.engine.engine_process says why and how they talk).

`EngineLauncher(spec)` starts the engine process before the front imports its web stack; `wait_ready` (on the
server's loading thread) returns a `ProcessEngine`: the AsyncEngine interface the server already talks to
(generate, abort, abort_completion, abort_all, call, compile_grammar, stats, dead_error, on_death, shutdown), so no
route knows the engine is elsewhere. Importing this module is cheap (no torch): the front never imports torch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import sys
import threading
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection
from typing import Any

from lucid.engine.engine_process import EngineInfo, EngineSpec, run_engine_process
from lucid.engine.outputs import EngineStats, RequestOutput
from lucid.engine.subscription import Subscriber, Subscriptions, settle
from lucid.errors import EngineDeadError
from lucid.sampling_params import SamplingParams

log = logging.getLogger("lucid.engine")

SHUTDOWN_WAIT = 10.0  # seconds the engine process may take to stop before it is killed


def start_method() -> str:
    """fork while this process has one thread (the start-up: the child inherits the imports so far for free, and
    no lock can be held by a thread that does not exist there); spawn otherwise."""
    if threading.active_count() > 1 or sys.platform != "linux":
        return "spawn"
    return "fork"


class EngineChild:
    """The engine's multiprocessing.Process, waited for by one thread at a time. Two threads joining it at once (the
    reader seeing EOF, a shutdown) race in waitpid: the loser's Process then reports it alive forever."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.pid: int = process.pid
        self._lock = threading.Lock()

    def join(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the exit; its exit code, or None while it runs."""
        with self._lock:
            self.process.join(timeout)
            return self.process.exitcode

    def is_alive(self) -> bool:
        with self._lock:
            return self.process.is_alive()

    def kill(self) -> None:
        with self._lock:
            if self.process.is_alive():
                self.process.kill()
                self.process.join(1.0)


class EngineLauncher:
    """Starts the engine process; `wait_ready` then waits for its model and returns the ProcessEngine."""

    def __init__(self, spec: EngineSpec, method: str | None = None) -> None:
        self.spec = spec
        context = multiprocessing.get_context(method or start_method())
        self.conn, child_end = context.Pipe()
        process = context.Process(target=run_engine_process, args=(child_end, self.conn, spec), name="lucid-engine",
                                  daemon=True)
        process.start()
        self.process = EngineChild(process)
        child_end.close()  # only the child holds it now: its exit reaches this end as EOF
        self.ready = False

    def wait_ready(self, tokenizer: Any | None = None) -> ProcessEngine:
        """Block until the engine has loaded (or failed: its exception is raised here). `tokenizer` is the front's
        own (lucid.loader.early_tokenizer); None asks the engine for its one."""
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            code = self.process.join(1.0)
            raise EngineDeadError(f"the engine process exited while loading (exit code {code})") from None
        if kind == "failed":
            self.process.join(SHUTDOWN_WAIT)
            raise payload
        if tokenizer is None:
            self.conn.send(("tokenizer", 0))
            tokenizer = self._tokenizer_reply()
            tokenizer.prepare()
        self.ready = True
        return ProcessEngine(self.conn, self.process, payload, tokenizer)

    def _tokenizer_reply(self) -> Any:
        """The answer to ("tokenizer", 0), read before the reader thread starts (counters may come first: the
        reader gets the next ones)."""
        while True:
            kind, payload = self.conn.recv()
            if kind == "dead":
                raise EngineDeadError(f"the engine has stopped: {payload}")
            for message in payload:
                if message[0] == "result":
                    return message[2]

    def stop(self) -> None:
        """The engine process gone: asked to stop once serving (a no-op after ProcessEngine.shutdown), killed
        while it loads (a SIGTERM then: nothing it holds is worth waiting for)."""
        if self.ready:
            _stop_process(self.conn, self.process)
        else:
            self.process.kill()


class ProcessEngine(Subscriptions):
    def __init__(self, conn: Connection, process: EngineChild, info: EngineInfo, tokenizer: Any) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.model_config = info.model_config
        self.engine_config = info.engine_config
        self.generation_config = info.generation_config
        self.model_name = info.model_name
        self.source_path = info.source_path
        self.dead_error: BaseException | None = None
        self.on_death: Callable[[BaseException], None] | None = None
        self._conn = conn
        self._process = process
        self._send_lock = threading.Lock()
        # self._lock (Subscriptions') also guards _calls and dead_error
        self._calls: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._call_ids = itertools.count(1)
        self._stats = EngineStats(0, 0, 0, 0, 0, 0)
        self._stopping = False
        self._reader: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, name="lucid-engine-outbox", daemon=True)
            self._reader.start()

    def shutdown(self, timeout: float = SHUTDOWN_WAIT) -> None:
        self._stopping = True
        _stop_process(self._conn, self._process, timeout)

    @property
    def is_running(self) -> bool:
        return self._process.is_alive() and self.dead_error is None

    # ---- requests ----------------------------------------------------------------------------------
    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        sub = Subscriber(asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            if self.dead_error is not None:
                raise EngineDeadError(f"the engine has stopped: {self.dead_error}")
            if request_id in self._subscribers:
                raise ValueError(f"request id {request_id!r} is already in use")
            self._subscribers[request_id] = sub
        self._send(("add", request_id, list(prompt_token_ids), params))  # its errors come back as items
        async for item in self._follow(request_id, sub):
            yield item

    def abort(self, request_id: str) -> None:
        self._send(("abort", request_id))

    def abort_completion(self, request_id: str, index: int) -> None:
        self._send(("abort_completion", request_id, index))

    def stats(self) -> EngineStats:
        return self._stats

    async def call(self, fn: Callable[[Any], Any]) -> Any:
        """fn(LLMEngine) on the engine's thread between two steps; fn must pickle (a module-level function or a
        functools.partial of one), and so must its result."""
        return await self._ask("call", fn)

    async def compile_grammar(self, spec: Any) -> None:
        await self._ask("compile", spec)

    async def _ask(self, kind: str, argument: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            if self.dead_error is not None:
                raise EngineDeadError(f"the engine has stopped: {self.dead_error}")
            call_id = next(self._call_ids)
            self._calls[call_id] = (asyncio.get_running_loop(), future)
        try:
            self._send((kind, call_id, argument))
            return await future
        finally:
            with self._lock:
                self._calls.pop(call_id, None)

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError) as exc:  # the process is gone: the reader reports it
                log.debug("engine process unreachable: %s", exc)

    # ---- the reader thread -------------------------------------------------------------------------
    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                code = self._process.join(1.0)
                if not self._stopping:
                    self._die(EngineDeadError(f"the engine process exited (exit code {code})"))
                return
            if message[0] == "batch":
                self._deliver(message[1])
            elif message[0] == "dead":
                self._die(message[1])

    def _deliver(self, messages: list[tuple]) -> None:
        """One batch from the engine process: each loop that waits on some of it is woken once, not per message."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Callable[..., None], tuple]]] = {}
        with self._lock:
            for message in messages:
                kind = message[0]
                if kind == "stats":
                    self._stats = message[1]
                elif kind in ("out", "error"):
                    sub = self._subscribers.get(message[1])
                    if sub is not None:
                        by_loop.setdefault(sub.loop, []).append((sub.queue.put_nowait, (message[2],)))
                elif kind == "result":
                    waiting = self._calls.get(message[1])
                    if waiting is not None:
                        by_loop.setdefault(waiting[0], []).append((settle, (waiting[1], message[2], message[3])))
        for loop, calls in by_loop.items():
            loop.call_soon_threadsafe(_run_all, calls)

    def _die(self, error: BaseException) -> None:
        """Every waiting request and look gets the error; /health turns 503; the server exits (on_death)."""
        log.error("the engine has stopped: %s: %s", type(error).__name__, error)
        with self._lock:
            if self.dead_error is not None:
                return
            self.dead_error = error
            subscribers = list(self._subscribers)
            calls = list(self._calls.values())
        for request_id in subscribers:
            self._publish(request_id, EngineDeadError(f"the engine has stopped: {error}"))
        for loop, future in calls:
            loop.call_soon_threadsafe(settle, future, None, EngineDeadError(f"the engine has stopped: {error}"))
        if self.on_death is not None:
            self.on_death(error)


def _run_all(calls: list[tuple[Callable[..., None], tuple]]) -> None:
    for fn, args in calls:
        fn(*args)


def _stop_process(conn: Connection, process: EngineChild, timeout: float = SHUTDOWN_WAIT) -> None:
    """Ask the engine process to stop; kill it if it does not within `timeout` seconds."""
    try:
        conn.send(("shutdown",))
    except (OSError, ValueError):
        pass
    if process.join(timeout) is None:
        log.warning("the engine process did not stop in %.0f s; killing it", timeout)
        process.kill()
