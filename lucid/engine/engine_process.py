"""The engine in a process of its own: the child side of lucid.engine.process_engine.

`lucid serve` starts this process first, then imports its web stack and builds its tokenizer while this one imports
torch and maps the weights: on two cores the two halves of the start-up run side by side instead of one after the
other under one GIL (vLLM splits its API server from its engine core the same way). Here an AsyncEngine runs as it
does in one process; a reader thread turns the front's messages into calls on it, and every RequestOutput goes back
over the pipe as it comes.

Messages (tuples, pickled by multiprocessing.connection), front -> engine:
    ("add", request_id, prompt_token_ids, SamplingParams)   a request; its outputs come back as "out" messages
    ("abort", request_id)                                   finish it with reason "abort" (the output still comes)
    ("abort_completion", request_id, index)                 stop one of its n completions
    ("call", call_id, fn)                                   fn(LLMEngine) between two steps (the glass box)
    ("compile", call_id, GrammarSpec)                       compile a grammar off the engine thread (a 400 early)
    ("tokenizer", call_id)                                  the engine's tokenizer, when the front could not build one
    ("shutdown",)
engine -> front:
    ("ready", EngineInfo) | ("failed", exception)           once, after loading
    ("out", request_id, RequestOutput) | ("error", request_id, exception)
    ("result", call_id, value, exception or None)
    ("stats", EngineStats)                                  when the counters changed, at most every STATS_PERIOD
    ("dead", exception)                                     the engine loop broke; the process then exits
Outputs, errors, results and counters leave in batches: ("batch", [message, ...]), one per turn of this process's
event loop, which is one per engine step when requests stream. A message a token would wake both processes' readers
once per request per step; on two cores each wake-up takes a core from the engine's compute threads (measured: 16
streams served 13% slower with a message per token).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid.config import EngineConfig, ModelConfig

if TYPE_CHECKING:
    from lucid.engine.async_engine import AsyncEngine

log = logging.getLogger("lucid.engine")

STATS_PERIOD = 0.05  # seconds between two counter updates to the front (its /metrics and queue gauges)


@dataclass
class EngineSpec:
    """How the engine process loads its model (the arguments of AsyncEngine.from_pretrained)."""

    model: str | None
    engine_config_for: Callable[[str], EngineConfig]  # the limits for the device (the CPU's and a GPU's differ)
    device: str | None = None        # None: cuda when available, else cpu
    dtype: str | None = None
    quantization: str | None = None  # None: the device's default
    log_level: str = "INFO"


@dataclass
class EngineInfo:
    """What the front needs of the loaded model (no weights, no tokenizer: the front builds its own)."""

    model_config: ModelConfig
    engine_config: EngineConfig
    generation_config: dict
    model_name: str
    source_path: Path | None


def sendable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling as itself, else a RuntimeError with its text (the front raises what arrives)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception type may fail to pickle
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def run_engine_process(conn: Connection, close_in_child: Connection | None, spec: EngineSpec) -> None:
    """The process's target: load, say ready, serve the front's messages until it says shutdown or goes away."""
    # Ctrl-C in a terminal signals the whole process group; the front drains on it and then stops this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if close_in_child is not None:
        close_in_child.close()  # the front's end: left open here, the front's exit would never reach this process
    logging.basicConfig(level=spec.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        engine = _load(spec)
    except BaseException as exc:  # noqa: BLE001 - the front reports it (ModelLoadError names the file)
        conn.send(("failed", sendable(exc)))
        return
    conn.send(("ready", EngineInfo(engine.model_config, engine.engine_config, engine.generation_config,
                                   engine.model_name, engine.source_path)))
    asyncio.run(_EngineServer(conn, engine).serve())


def _load(spec: EngineSpec) -> AsyncEngine:
    from lucid.malloc_tuning import keep_large_blocks
    from lucid.server import startup_gc

    keep_large_blocks()
    startup_gc.pause()  # as `lucid serve` in one process: nothing to collect while the modules load
    try:
        import torch

        from lucid.config import DEFAULT_QUANTIZATION
        from lucid.engine.async_engine import AsyncEngine

        startup_gc.freeze_imports()
        device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
        quantization = spec.quantization or (DEFAULT_QUANTIZATION if device == "cpu" else "none")
        options = {"dtype": spec.dtype} if spec.dtype else {}
        log.info("Loading %s on %s ...", spec.model or "the default model", device)
        # The engine only detokenizes: the tokenizer's BPE tables (~0.25 s to build) are for the front.
        return AsyncEngine.from_pretrained(spec.model, device=device, quantization=quantization,
                                           engine_config=spec.engine_config_for(device), prepare_tokenizer=False,
                                           **options)
    finally:
        startup_gc.resume()


class _EngineServer:
    """Runs on the process's event loop; the reader thread hands it each message."""

    def __init__(self, conn: Connection, engine: AsyncEngine) -> None:
        self.conn = conn
        self.engine = engine
        self.send_lock = threading.Lock()
        self.outbox: list[tuple] = []               # messages of this turn of the loop, sent together by _flush
        self.stopped: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def send(self, message: tuple) -> None:
        with self.send_lock:
            try:
                self.conn.send(message)
            except (OSError, EOFError):  # the front is gone: its reader ends this process
                pass

    def post(self, message: tuple) -> None:
        """Queue a message to leave with the others of this turn of the loop (on the loop's thread only)."""
        if not self.outbox:
            self.loop.call_soon(self._flush)  # type: ignore[union-attr]  (after every task this turn woke)
        self.outbox.append(message)

    def _flush(self) -> None:
        batch, self.outbox = self.outbox, []
        self.send(("batch", batch))

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        self.engine.on_death = self._engine_died
        self.engine.start()
        threading.Thread(target=self._read, name="lucid-engine-inbox", daemon=True).start()
        stats = self.loop.create_task(self._post_stats())
        await self.stopped.wait()
        stats.cancel()
        self.engine.abort_all()
        self.engine.shutdown()

    def _read(self) -> None:
        """The reader thread: each message to the loop; the front gone (EOF) ends the process."""
        assert self.loop is not None
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the front died without a shutdown: nothing is left to serve
            self.loop.call_soon_threadsafe(self._dispatch, message)
            if message[0] == "shutdown":
                return

    def _dispatch(self, message: tuple) -> None:
        kind = message[0]
        if kind == "add":
            _, request_id, prompt, params = message
            self.loop.create_task(self._stream(request_id, prompt, params))  # type: ignore[union-attr]
        elif kind == "abort":
            self.engine.abort(message[1])
        elif kind == "abort_completion":
            self.engine.abort_completion(message[1], message[2])
        elif kind == "call":
            self.loop.create_task(self._answer(message[1], self.engine.call(message[2])))  # type: ignore[union-attr]
        elif kind == "compile":
            self.loop.create_task(self._answer(message[1], self.engine.compile_grammar(message[2])))  # type: ignore[union-attr]
        elif kind == "tokenizer":
            self.post(("result", message[1], self.engine.tokenizer, None))
        elif kind == "shutdown":
            self.stopped.set()  # type: ignore[union-attr]

    async def _stream(self, request_id: str, prompt: list[int], params: Any) -> None:
        try:
            async for out in self.engine.generate(prompt, params, request_id):
                self.post(("out", request_id, out))
        except Exception as exc:  # noqa: BLE001 - raised again in the front, which maps it to its HTTP status
            self.post(("error", request_id, sendable(exc)))

    async def _answer(self, call_id: int, work: Any) -> None:
        try:
            result, error = await work, None
        except Exception as exc:  # noqa: BLE001 - raised again in the front
            result, error = None, sendable(exc)
        self.post(("result", call_id, result, error))

    async def _post_stats(self) -> None:
        last = None
        while True:
            stats = self.engine.stats()
            if stats != last:
                self.post(("stats", stats))
                last = stats
            await asyncio.sleep(STATS_PERIOD)

    def _engine_died(self, error: BaseException) -> None:
        """On the engine thread, after every request got its error: tell the front, which exits (a supervisor
        restarts lucid); this process ends with it."""
        self.send(("dead", sendable(error)))
