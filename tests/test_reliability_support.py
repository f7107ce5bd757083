"""Helpers (not tests) for the reliability tests: waiting for an idle engine, reading SSE streams, and the real app
with a real tiny engine served in-process, where a test can wrap the engine to make it fail on purpose."""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from test_server_support import REPO, ServerProcess, free_port

from lucid.config import EngineConfig
from lucid.server.app import build_app
from lucid.server.state import ServerSettings, ServerState

IDLE_TIMEOUT = 30.0
STEP_SECONDS = 0.01  # a paced server's least time per engine step

# `lucid serve`, with each engine step made to last at least $LUCID_TEST_STEP_SECONDS: tests that need a request to
# still be running a moment later (a drain, a queue, a client timeout) then hold on a fast machine as on a slow one.
# $LUCID_TEST_LOAD_SECONDS likewise makes loading the model last at least that long (the 503s while loading).
PACED_SERVE = """
import os, sys, time
from lucid.cli import main
from lucid.engine.llm_engine import LLMEngine
pause, step = float(os.environ["LUCID_TEST_STEP_SECONDS"]), LLMEngine.step
load_pause, load = float(os.environ.get("LUCID_TEST_LOAD_SECONDS", "0")), LLMEngine.from_pretrained

def paced_step(self):
    time.sleep(pause)
    return step(self)

def paced_load(*args, **kwargs):
    time.sleep(load_pause)
    return load(*args, **kwargs)

LLMEngine.step = paced_step
LLMEngine.from_pretrained = staticmethod(paced_load)
sys.exit(main(["serve", *sys.argv[1:]]))
"""


class PacedServerProcess(ServerProcess):
    """A ServerProcess whose engine steps last at least STEP_SECONDS each."""

    def __init__(self, *args: str, load_seconds: float = 0.0) -> None:  # noqa: D107 - ServerProcess's, another command
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="lucid-paced-", suffix=".log")[1])
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LUCID_TEST_STEP_SECONDS": str(STEP_SECONDS),
               "LUCID_TEST_LOAD_SECONDS": str(load_seconds)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", PACED_SERVE, "--port", str(self.port), *args],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)


_paced: dict[tuple[str, ...], PacedServerProcess] = {}


def shared_paced_server(*args: str) -> PacedServerProcess:
    """One ready paced server per argument list for the whole session, stopped when the test process exits."""
    if args not in _paced or _paced[args].proc.poll() is not None:
        _paced[args] = PacedServerProcess(*args)
        _paced[args].wait_ready()
    return _paced[args]


@atexit.register
def stop_shared_servers() -> None:
    """Stop every paced server (at exit, and from conftest's early exit, which skips atexit)."""
    for server in _paced.values():
        server.stop()
    _paced.clear()


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    """Unlabelled samples of /metrics, by name."""
    values = {}
    for line in httpx.get(f"{url}/metrics", headers=headers, timeout=10).text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def is_idle(m: dict[str, float]) -> bool:
    return (m["lucid_num_requests_running"] == 0 and m["lucid_num_requests_waiting"] == 0
            and m["lucid_kv_cache_used_blocks"] == 0)


@dataclass
class Settled:
    seconds: float       # from the call until the engine held nothing
    steps: int           # engine steps taken meanwhile
    metrics: dict[str, float]


def wait_idle(url: str, timeout: float = IDLE_TIMEOUT, headers: dict[str, str] | None = None) -> Settled:
    """Poll /metrics until no sequence runs or waits and no KV block is in use; fails with the last sample."""
    started = time.monotonic()
    first = scrape(url, headers)
    m = first
    while not is_idle(m):
        assert time.monotonic() - started < timeout, f"the engine still holds requests after {timeout} s: {m}"
        time.sleep(0.02)
        m = scrape(url, headers)
    return Settled(time.monotonic() - started, int(m["lucid_engine_steps"] - first["lucid_engine_steps"]), m)


def sse_data(lines: Iterable[str]) -> list[str]:
    """The payloads of an SSE stream's `data:` lines."""
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def stream_payloads(url: str, path: str, body: dict, timeout: float = 120) -> tuple[int, list[str]]:
    """POST a streaming request and read it to the end: (status, data payloads)."""
    with httpx.stream("POST", f"{url}{path}", json={**body, "stream": True}, timeout=timeout) as response:
        return response.status_code, sse_data(response.iter_lines())


def stream_error(payloads: list[str]) -> dict | None:
    """The OpenAI error object a stream ended with, if it did."""
    if len(payloads) >= 2 and payloads[-1] == "[DONE]":
        last = json.loads(payloads[-2])
        return last.get("error")
    return None


class InProcessServer:
    """The real app and a real tiny-model engine under uvicorn in a thread of this process."""

    def __init__(self, model_dir: str, max_model_len: int = 512, **settings: object) -> None:
        from lucid.engine.async_engine import AsyncEngine

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

        def load() -> AsyncEngine:
            return AsyncEngine.from_pretrained(model_dir, dtype="float32",
                                               engine_config=EngineConfig(max_model_len=max_model_len))

        self.state = ServerState(load, ServerSettings(served_model_names=["tiny"], port=self.port, **settings))
        config = uvicorn.Config(build_app(self.state), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while self.state.phase == "loading" or not self.server.started:
            assert time.monotonic() < deadline and self.state.phase != "failed", self.state.load_error
            time.sleep(0.05)

    @property
    def engine(self):  # noqa: ANN201 - lucid.engine.async_engine.AsyncEngine
        return self.state.engine

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


_in_process: dict[str, InProcessServer] = {}


def shared_in_process_server(model_dir: str) -> InProcessServer:
    """One in-process server per model for the session; tests that wrap its engine must unwrap it when done."""
    if model_dir not in _in_process or not _in_process[model_dir].thread.is_alive():
        _in_process[model_dir] = InProcessServer(model_dir)
    return _in_process[model_dir]
