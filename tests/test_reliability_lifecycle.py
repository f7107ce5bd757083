"""Stopping and dying: SIGTERM / SIGINT stop admitting (503), let in-flight requests finish within the grace period
(those still running after it end cleanly, aborted), and the process exits 0 leaving no process behind; an engine
loop that dies turns /health to 503 and logs why."""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time

import httpx
import psutil
import pytest
from test_reliability_support import STEP_SECONDS, InProcessServer, PacedServerProcess, stream_error
from test_server_support import ServerProcess, tiny_server_args

pytestmark = pytest.mark.timeout(180)

GRACE = 2.0


class _Stream(threading.Thread):
    """A streamed completion read to its end in the background; `started` is set at its first chunk."""

    def __init__(self, url: str, max_tokens: int) -> None:
        super().__init__()
        self.url = url
        self.body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": max_tokens, "ignore_eos": True,
                     "stream": True}
        self.started = threading.Event()
        self.payloads: list[str] = []
        self.start()

    def run(self) -> None:
        with httpx.stream("POST", f"{self.url}/v1/completions", json=self.body, timeout=120) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    self.payloads.append(line.removeprefix("data: "))
                    self.started.set()

    def finish_reason(self) -> str | None:
        return json.loads(self.payloads[-2])["choices"][0]["finish_reason"]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _refused_while_draining(server: ServerProcess) -> None:
    refused = httpx.post(f"{server.url}/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 2},
                         timeout=10)
    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
    assert refused.json()["error"]["type"] == "service_unavailable"
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 503


def _assert_gone(server: ServerProcess, family: list[psutil.Process]) -> None:
    assert server.proc.wait(GRACE + 30) == 0, server.log()[-3000:]
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not _port_open(server.port)


def test_sigterm_finishes_in_flight_within_the_grace_period_then_exits_0(tiny_model):
    # paced, so that the short request is still running at the signal and the long one outlasts the grace
    server = PacedServerProcess(*tiny_server_args(tiny_model), "--shutdown-timeout", str(GRACE))
    try:
        server.wait_ready()
        short, long = _Stream(server.url, 40), _Stream(server.url, 480)
        assert 40 * STEP_SECONDS < GRACE < 480 * STEP_SECONDS
        assert short.started.wait(60) and long.started.wait(60)
        family = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(recursive=True)]
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        _refused_while_draining(server)
        short.join(60)
        long.join(60)
        stopped_after = time.monotonic() - signalled
        _assert_gone(server, family)
    finally:
        server.stop(signal.SIGKILL)
    print(f"\nSIGTERM: exited 0 {stopped_after:.1f} s after the signal (grace {GRACE:.0f} s)")
    assert short.payloads[-1] == "[DONE]" and short.finish_reason() == "length"  # finished within the grace
    error = stream_error(long.payloads)  # still running at the end of the grace: aborted, and told so
    assert error is not None and error["type"] == "service_unavailable", long.payloads[-3:]
    assert "Grace period over" in server.log()


def test_sigint_drains_the_same_way(tiny_model):
    server = PacedServerProcess(*tiny_server_args(tiny_model))
    try:
        server.wait_ready()
        stream = _Stream(server.url, 120)  # 1.2 s at least: still running at the signal
        assert stream.started.wait(60)
        family = [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(recursive=True)]
        server.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        _refused_while_draining(server)
        stream.join(60)
        _assert_gone(server, family)
    finally:
        server.stop(signal.SIGKILL)
    assert stream.payloads[-1] == "[DONE]" and stream.finish_reason() == "length"
    assert "Received SIGINT" in server.log()


def test_dead_engine_loop_makes_health_503_and_logs_its_cause(tiny_model, caplog):
    server = InProcessServer(str(tiny_model.hf_dir))
    fatal = threading.Event()
    server.state.on_fatal = fatal.set   # what `lucid serve` sets: stop the process with exit code 1
    try:
        def broken_schedule() -> None:
            raise RuntimeError("the scheduler's bookkeeping is corrupt")

        server.engine.engine.scheduler.schedule = broken_schedule
        with caplog.at_level(logging.ERROR, logger="lucid.engine"):
            response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "Hi", "max_tokens": 4}, timeout=30)
        assert response.status_code == 503, response.text
        assert "corrupt" in response.json()["error"]["message"]
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 503 and health.headers["retry-after"]
        assert health.json()["status"] == "dead" and "corrupt" in health.json()["message"]
        died = [r for r in caplog.records if r.name == "lucid.engine" and "engine loop died" in r.getMessage()]
        assert died and "corrupt" in died[0].getMessage() and died[0].exc_info is not None
        again = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]},
                           timeout=30)
        assert again.status_code == 503
        assert httpx.get(f"{server.url}/metrics").text.count("lucid_ready 0.0") == 1
        assert fatal.wait(10), "the server was not told to exit after its engine died"
    finally:
        server.close()
