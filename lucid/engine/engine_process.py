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
Everything the engine sends leaves in batches, ("batch", [message, ...]): one per turn of the engine loop (a step),
sent by the engine thread itself. A message per token through an event loop in this process woke another thread per
request per step, and on two cores each wake-up takes the GIL from the engine thread or a core from its compute
threads: 16 streams were served 3-5% slower than with the engine in the server's own process in interleaved runs;
sent this way, no slower (benchmarks/engine_process.py, docs/BENCHMARKS.md).
"""

from __future__ import annotations

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
    piped = _piped_engine_class()(engine.engine, conn)
    conn.send(("ready", EngineInfo(piped.model_config, piped.engine_config, piped.generation_config,
                                   piped.model_name, piped.source_path)))
    piped.start()
    piped.serve()


def load_engine(spec: EngineSpec, prepare_tokenizer: bool = True) -> AsyncEngine:
    """The AsyncEngine `spec` describes, on cuda when available and no device is named; `lucid serve` loads it
    here in the engine process, or in its own with --engine-in-process. Imports torch."""
    import torch

    from lucid.config import DEFAULT_QUANTIZATION
    from lucid.engine.async_engine import AsyncEngine
    from lucid.server import startup_gc

    startup_gc.freeze_imports()  # torch's modules, imported just now: never worth scanning
    device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
    quantization = spec.quantization or (DEFAULT_QUANTIZATION if device == "cpu" else "none")
    options = {"dtype": spec.dtype} if spec.dtype else {}
    log.info("Loading %s on %s ...", spec.model or "the default model", device)
    return AsyncEngine.from_pretrained(spec.model, device=device, quantization=quantization,
                                       engine_config=spec.engine_config_for(device),
                                       prepare_tokenizer=prepare_tokenizer, **options)


def _load(spec: EngineSpec) -> AsyncEngine:
    from lucid.malloc_tuning import keep_large_blocks
    from lucid.server import startup_gc

    keep_large_blocks()
    startup_gc.pause()  # as `lucid serve` in one process: nothing to collect while the modules load
    try:
        # The engine only detokenizes: the tokenizer's BPE tables (~0.25 s to build) are for the front.
        return load_engine(spec, prepare_tokenizer=False)
    finally:
        startup_gc.resume()


def _piped_engine_class() -> type:
    """PipedEngine, defined once AsyncEngine (and torch, through it) is imported: the front imports this module."""
    from lucid.engine.async_engine import AsyncEngine

    class PipedEngine(AsyncEngine):
        """The AsyncEngine of this process: requests come from the pipe (the main thread reads it), and the engine
        thread sends each turn's outputs, errors, call results and counters down it as one batch."""

        def __init__(self, llm_engine: Any, conn: Connection) -> None:
            super().__init__(llm_engine)
            self.conn = conn
            self.send_lock = threading.Lock()
            self.batch: list[tuple] = []          # this turn's messages: the engine thread's alone
            self.posted_stats = None
            self.on_death = self._died

        # ---- the engine thread's side ------------------------------------------------------------
        def _publish(self, request_id: str, item: Any) -> None:
            if isinstance(item, BaseException):
                self.batch.append(("error", request_id, sendable(item)))
                done = True
            else:
                self.batch.append(("out", request_id, item))
                done = item.finished
            if done:
                with self._lock:
                    self._subscribers.pop(request_id, None)

        def _answer(self, loop: Any, future: Any, result: Any, error: BaseException | None) -> None:
            self.batch.append(("result", future, result, None if error is None else sendable(error)))

        def _turn_done(self) -> None:
            if self._stats != self.posted_stats:
                self.batch.append(("stats", self._stats))
                self.posted_stats = self._stats
            if self.batch:
                batch, self.batch = self.batch, []
                self.send(("batch", batch))

        def _died(self, error: BaseException) -> None:
            """After every request got its error: tell the front, which exits (a supervisor restarts lucid)."""
            self._turn_done()
            self.send(("dead", sendable(error)))

        # ---- the main thread: the front's messages ---------------------------------------------------
        def send(self, message: tuple) -> None:
            with self.send_lock:
                try:
                    self.conn.send(message)
                except (OSError, EOFError):  # the front is gone: the main thread's read ends this process
                    pass

        def serve(self) -> None:
            while True:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    os._exit(0)  # the front died without a shutdown: nothing is left to serve
                if message[0] == "shutdown":
                    self.abort_all()
                    self.shutdown()
                    # Straight out, as on the front's disappearance above: the interpreter's and torch's teardown
                    # has nothing to save here, and it is not worth a moment of the front's shutdown.
                    logging.shutdown()
                    os._exit(0)
                self._dispatch(message)

        def _dispatch(self, message: tuple) -> None:
            kind = message[0]
            if kind == "add":
                _, request_id, prompt, params = message
                try:
                    self._admit(request_id, prompt, params, subscriber=True)
                except Exception as exc:  # noqa: BLE001 - raised again in the front (a 400, a 429 ...)
                    self.send(("batch", [("error", request_id, sendable(exc))]))
            elif kind == "abort":
                self.abort(message[1])
            elif kind == "abort_completion":
                self.abort_completion(message[1], message[2])
            elif kind == "call":  # run between two steps by the engine thread, answered in its batch
                self._inbox.put(("call", message[2], None, message[1]))
                self._wake.set()
            elif kind == "compile":  # a first grammar may take seconds: not on this thread, which reads aborts
                threading.Thread(target=self._compile, args=message[1:], daemon=True).start()
            elif kind == "tokenizer":
                self.send(("batch", [("result", message[1], self.tokenizer, None)]))

        def _compile(self, call_id: int, spec: Any) -> None:
            try:
                self.engine.grammars.compile(spec)
                error = None
            except Exception as exc:  # noqa: BLE001 - a StructuredOutputError is the front's 400
                error = sendable(exc)
            self.send(("batch", [("result", call_id, None, error)]))

    return PipedEngine
