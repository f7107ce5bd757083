"""The server's life: loading the engine (in a thread, so /health can answer 503 meanwhile), ready, draining, failed.

Request handlers ask this object for the engine; it answers with the engine or with the 503 to send.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lucid.server.errors import model_not_found, unavailable
from lucid.server.metrics import Metrics
from lucid.server.settings import ServerSettings

if TYPE_CHECKING:
    from lucid.engine.async_engine import AsyncEngine

logger = logging.getLogger("lucid.server")

DEAD_ENGINE_EXIT_DELAY = 1.0  # seconds between the engine loop's death and the process exit (responses flush)


class ServerState:
    """Owns the engine. phase: loading -> ready -> draining; or loading -> failed."""

    def __init__(self, load_engine: Callable[[], AsyncEngine], settings: ServerSettings | None = None) -> None:
        self.load_engine = load_engine
        self.settings = settings or ServerSettings()
        self.metrics = Metrics()
        self.engine: AsyncEngine | None = None
        self.phase = "loading"
        self.load_error: BaseException | None = None
        self.in_flight = 0                      # API requests being served (the drain waits for 0)
        self.on_fatal: Callable[[], None] | None = None  # set by the CLI: stop the process when loading fails
        self.served_names: list[str] = list(self.settings.served_model_names)
        self.metrics.bind(self)

    async def load(self) -> None:
        """Load the engine in a daemon thread (a SIGTERM during a long load must not wait for it), then start it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def work() -> None:
            try:
                result: Any = self.load_engine()
            except BaseException as exc:  # noqa: BLE001 - reported to the loop, which logs it
                result = exc
            if not loop.is_closed():
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

        started = time.perf_counter()
        threading.Thread(target=work, name="lucid-load", daemon=True).start()
        result = await done
        if isinstance(result, BaseException):
            self.phase, self.load_error = "failed", result
            logger.error("Loading the model failed: %s", result)
            if self.on_fatal:
                self.on_fatal()
            return
        engine = result
        engine.on_death = self._engine_died
        engine.start()  # on the event loop's thread: the engine may bind to the running loop
        self.engine = engine
        if not self.served_names:
            self.served_names = [engine.model_name]
        if self.phase == "loading":  # a SIGTERM during loading already moved us to draining
            self.phase = "ready"
        logger.info("Model loaded in %.1f s; served as %s", time.perf_counter() - started,
                    ", ".join(repr(n) for n in self.served_names))

    def _engine_died(self, error: BaseException) -> None:
        """The engine loop broke (its requests already got their errors): with the CLI, stop the process with exit
        code 1 after a moment for those error responses to go out; /health says "dead" meanwhile."""
        if self.on_fatal is None:
            return
        logger.error("The engine has stopped (%s: %s); exiting so that a supervisor can restart lucid",
                     type(error).__name__, error)
        timer = threading.Timer(DEAD_ENGINE_EXIT_DELAY, self.on_fatal)
        timer.daemon = True
        timer.start()

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()

    def start_draining(self) -> None:
        if self.phase in ("loading", "ready"):
            self.phase = "draining"

    def unavailable_reason(self) -> str | None:
        """Why requests cannot be served now (the body of the 503), or None when they can."""
        if self.phase == "loading":
            return "The model is still loading; retry shortly."
        if self.phase == "failed":
            return f"The model failed to load: {self.load_error}"
        if self.phase == "draining":
            return "The server is shutting down and accepts no new requests."
        if self.engine is not None and self.engine.dead_error is not None:
            return f"The engine has stopped: {self.engine.dead_error}"
        return None

    def require_engine(self) -> AsyncEngine:
        reason = self.unavailable_reason()
        if reason is not None or self.engine is None:
            raise unavailable(reason or "The engine is not running.")
        return self.engine

    def check_model(self, name: str | None) -> str:
        """The name to echo back in responses; 404 for a model this server does not serve."""
        if name is None or name == "":
            return self.served_names[0]
        if name not in self.served_names:
            raise model_not_found(name, self.served_names)
        return name

