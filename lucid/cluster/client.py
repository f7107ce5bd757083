"""The front's engine: the AsyncEngine interface the server already talks to (generate, stats, abort_all,
dead_error, shutdown), backed by Ray Serve replicas through a deployment handle. The FastAPI app does not know the
difference: it renders and tokenizes prompts with the tokenizer the replicas sent, and reads RequestOutputs.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import ray
from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException

from lucid.cluster.messages import ReplicaFailure, ReplicaInfo, ReplicaRequest
from lucid.engine.outputs import EngineStats, RequestOutput
from lucid.errors import ContextLengthError, EngineDeadError, ModelLoadError, QueueFullError, SamplingParamsError
from lucid.sampling_params import SamplingParams
from lucid.server.errors import unavailable

log = logging.getLogger("lucid.cluster")

HEALTH_POLL_SECONDS = 1.0
STATUS_GRACE_SECONDS = 15.0  # how long Serve's status may be unreadable before /health says no replica serves
_ENGINE_ERRORS: dict[str, type[Exception]] = {cls.__name__: cls for cls in (
    ContextLengthError, EngineDeadError, ModelLoadError, QueueFullError, ValueError)}


class ReplicaLostError(EngineDeadError):
    """The replica serving a request died or became unreachable mid-way (the server answers 503)."""


class ClusterEngine:
    def __init__(self, handle: Any, info: ReplicaInfo, app_name: str, deployment_name: str, num_replicas: int,
                 stats_board: Any, on_shutdown: Callable[[], None]) -> None:
        self._stream = handle.options(stream=True).generate
        self.tokenizer = info.tokenizer
        self.model_config = info.model_config
        self.engine_config = info.engine_config
        self.generation_config = info.generation_config
        self.model_name = info.model_name
        self.app_name, self.deployment_name, self.num_replicas = app_name, deployment_name, num_replicas
        self.dead_error: BaseException | None = None   # set while no replica serves: /health and requests say 503
        self.on_death: Callable[[BaseException], None] | None = None  # never called: Serve restarts replicas
        self.running_replicas = num_replicas
        self.requests_by_replica: Counter[str] = Counter()
        self._stats_board = stats_board
        self._replica_stats: dict[str, dict[str, Any]] = {}
        self._in_flight: dict[str, Any] = {}
        self._aborted: set[str] = set()
        self._on_shutdown = on_shutdown
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """On the server's main thread: start following the replicas."""
        _reclaim_stop_signals()
        if self._poller is None:
            self._poller = threading.Thread(target=self._watch_replicas, name="lucid-replicas", daemon=True)
            self._poller.start()

    def shutdown(self) -> None:
        """Stop the replicas (and a local Ray): returns when they are gone."""
        self._stop.set()
        self.abort_all()
        self._on_shutdown()

    def _watch_replicas(self) -> None:
        """Follow how many replicas Serve has running (none: 503 until Serve has restarted one) and their counters."""
        failing_since: float | None = None
        while not self._stop.wait(HEALTH_POLL_SECONDS):
            try:
                deployment = serve.status().applications[self.app_name].deployments[self.deployment_name]
                running = sum(n for state, n in deployment.replica_states.items()
                              if getattr(state, "value", state) == "RUNNING")
            except Exception as exc:  # noqa: BLE001 - Serve's controller is restarting, or gone
                failing_since = failing_since or time.monotonic()
                log.warning("cannot read the replicas' status: %s", exc)
                # The controller restarts on its own; the replicas keep serving meanwhile. Only a long silence
                # means nothing serves.
                running = 0 if time.monotonic() - failing_since > STATUS_GRACE_SECONDS else self.running_replicas
            else:
                failing_since = None
            self._read_stats_board()
            if running != self.running_replicas:
                log.info("replicas running: %d of %d", running, self.num_replicas)
            self.running_replicas = running
            self.dead_error = None if running else EngineDeadError(
                f"no replica is serving (0 of {self.num_replicas} running); Ray Serve is restarting them")

    def _read_stats_board(self) -> None:
        try:
            self._replica_stats = ray.get(self._stats_board.read.remote(), timeout=HEALTH_POLL_SECONDS * 5)
        except Exception as exc:  # noqa: BLE001 - only /metrics' per-replica gauges go stale
            log.warning("cannot read the replicas' counters: %s", exc)

    @property
    def is_running(self) -> bool:
        return self.dead_error is None

    # ---- requests ----------------------------------------------------------------------------------
    async def generate(self, prompt_token_ids: list[int], params: SamplingParams,
                       request_id: str) -> AsyncIterator[RequestOutput]:
        if self.dead_error is not None:
            raise EngineDeadError(str(self.dead_error))
        response = self._stream.remote(ReplicaRequest(list(prompt_token_ids), params, request_id))
        self._in_flight[request_id] = response
        finished = counted = False
        try:
            async for batch in response:
                if not counted:
                    self.requests_by_replica[batch.replica] += 1
                    counted = True
                if batch.error is not None:
                    raise _as_exception(batch.error)
                for out in batch.outputs:
                    finished = out.finished
                    yield out
            if not finished:
                raise ReplicaLostError("the replica ended the request's stream early")
        except (RayError, RayServeException) as exc:
            if request_id in self._aborted:
                raise unavailable("The request was aborted by the server (it is shutting down).") from None
            log.warning("request %s lost its replica: %s: %s", request_id, type(exc).__name__, exc)
            raise ReplicaLostError("the replica serving this request stopped; retry (the others still serve)") \
                from None
        finally:
            self._in_flight.pop(request_id, None)
            self._aborted.discard(request_id)
            if not finished:
                response.cancel()  # the replica aborts the engine request and frees its KV blocks

    async def compile_grammar(self, spec: Any) -> None:
        """The replica compiles the grammar when the request arrives there; a bad one comes back as a 400 from it
        (the front holds no grammar engine of its own)."""

    def abort_completion(self, request_id: str, index: int) -> None:
        """One completion's early stop is not sent to the replica: it computes that row until the request ends (what
        a cut completion costs there is one more row in its steps; the server drops its text either way)."""

    def abort_all(self) -> int:
        """Cancel every request in flight (shutdown after the grace period); each gets a 503."""
        request_ids = list(self._in_flight)
        for request_id in request_ids:
            response = self._in_flight.get(request_id)
            if response is not None:
                self._aborted.add(request_id)
                response.cancel()
        return len(request_ids)

    def replica_stats(self) -> dict[str, dict[str, Any]]:
        """Each replica's latest engine counters (running, waiting, KV blocks ...), by replica id."""
        return self._replica_stats

    def stats(self) -> EngineStats:
        """The replicas' counters summed: what /metrics shows for the whole deployment."""
        total = Counter[str]()
        for stats in self.replica_stats().values():
            total.update({k: int(v) for k, v in stats.items()})
        return EngineStats(total["running"], total["waiting"], total["used_blocks"], total["total_blocks"],
                           total["preemptions"], total["steps"])


def _reclaim_stop_signals() -> None:
    """Ray's core worker hooks a crash handler onto SIGTERM/SIGINT at the C level; it arms a 3 s alarm that aborts
    the process in the middle of the drain and the replicas' shutdown (exit 134, Ray processes left behind). Give
    the signals back to the server's own handlers, which drain and then stop Serve and Ray."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(sig)
        if handler is not None:
            signal.signal(sig, handler)


def _as_exception(failure: ReplicaFailure) -> Exception:
    """The engine's own exception again, so the server maps it to the same HTTP status as in one process."""
    if failure.kind in ("SamplingParamsError", "StructuredOutputError"):
        return SamplingParamsError(failure.message, param=failure.param)
    return _ENGINE_ERRORS.get(failure.kind, RuntimeError)(failure.message)
