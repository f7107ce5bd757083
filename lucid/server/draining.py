"""uvicorn with a graceful drain: the first SIGTERM/SIGINT lets requests in flight finish before the server stops."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

import uvicorn

from lucid.server.state import ServerState

logger = logging.getLogger("lucid.server")

ABORT_SETTLE_SECONDS = 2.0  # after the grace period: time for aborted requests to send their last bytes


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains: new requests get 503 while those in flight finish (up to a
    grace period), then the server stops and the process exits 0. A second signal stops at once."""

    def __init__(self, config: uvicorn.Config, state: ServerState, grace: float) -> None:
        super().__init__(config)
        self.state = state
        self.grace = grace
        self.exit_code = 0
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Unlike uvicorn's handler, the signal is not recorded: uvicorn would re-raise it after shutdown, and the
        # process would die by the signal instead of exiting 0.
        if self._draining:
            self.should_exit = self.force_exit = True
            return
        if self.state.phase != "ready":  # loading or failed: nothing to drain
            self.should_exit = True
            return
        self._draining = True
        self.state.start_draining()
        logger.info("Received %s: refusing new requests, letting %d in flight finish (up to %.0f s)",
                    signal.Signals(sig).name, self.state.in_flight, self.grace)
        threading.Thread(target=self._drain, name="lucid-drain", daemon=True).start()

    def _drain(self) -> None:
        self._wait_in_flight(self.grace)
        if self.state.in_flight > 0:
            # Aborted requests end cleanly (a 503, or a stream's error event and [DONE]) rather than being cut off
            # mid-response when uvicorn closes their connections.
            aborted = self.state.engine.abort_all() if self.state.engine is not None else 0
            logger.warning("Grace period over: aborting %d engine request(s) of the %d HTTP request(s) in flight",
                           aborted, self.state.in_flight)
            self._wait_in_flight(ABORT_SETTLE_SECONDS)
        self.should_exit = True

    def _wait_in_flight(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.state.in_flight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)

    def fail(self) -> None:
        """Stop with exit code 1 (the model could not be loaded)."""
        self.exit_code = 1
        self.should_exit = True
