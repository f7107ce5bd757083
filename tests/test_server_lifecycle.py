"""A server's life around its requests: 503 while loading, clients that leave, and a graceful SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest
from test_reliability_support import PacedServerProcess, shared_paced_server
from test_server_support import ServerProcess, shared_server, tiny_server_args

pytestmark = pytest.mark.timeout(300)

# With the paced server (>= 10 ms a step) this lasts >= 4 s, longer than the clients' short timeouts.
LONG = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True}


@pytest.fixture(scope="module")
def tiny_server(tiny_model):
    return shared_server(*tiny_server_args(tiny_model))


def _wait_idle(server: ServerProcess, timeout: float = 10.0) -> dict[str, float]:
    """Poll /metrics until no sequence runs or waits and no KV block is in use."""
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        idle = m["lucid_num_requests_running"] == 0 and m["lucid_num_requests_waiting"] == 0
        if idle and m["lucid_kv_cache_used_blocks"] == 0:
            return m
        assert time.monotonic() < deadline, f"the engine still holds the request: {m}"
        time.sleep(0.1)


def test_dropped_stream_frees_its_blocks(tiny_server):
    _wait_idle(tiny_server)
    with httpx.stream("POST", f"{tiny_server.url}/v1/completions", json={**LONG, "stream": True}, timeout=60) as r:
        lines = r.iter_lines()
        data = [line for line in (next(lines) for _ in range(12)) if line.startswith("data:")]
        assert len(data) >= 3
        busy = tiny_server.metrics()
        assert busy["lucid_num_requests_running"] == 1 and busy["lucid_kv_cache_used_blocks"] > 0
    _wait_idle(tiny_server)  # the client left after a few tokens of 400: the request is aborted, blocks freed


def test_dropped_non_streaming_request_is_aborted(tiny_model):
    server = shared_paced_server(*tiny_server_args(tiny_model))
    _wait_idle(server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=LONG, timeout=1.5)
    _wait_idle(server)


def _stream_lines(url: str, body: dict, out: list[str], started: threading.Event) -> None:
    with httpx.stream("POST", url, json=body, timeout=120) as response:
        for line in response.iter_lines():
            out.append(line)
            started.set()


def test_health_503_while_loading_then_graceful_sigterm(tiny_model):
    # >= 10 ms a step: the stream outlasts the signal. Loading the tiny model takes a few ms once the socket is
    # open (torch is imported before it), so it is made to last 0.5 s: the first health answers are 503s.
    server = PacedServerProcess(*tiny_server_args(tiny_model), load_seconds=0.5)
    try:
        seen = server.wait_ready()
        assert seen[0] == 503 and seen[-1] == 200, seen
        lines: list[str] = []
        started = threading.Event()
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 150, "ignore_eos": True, "stream": True}
        reader = threading.Thread(target=_stream_lines, args=(f"{server.url}/v1/completions", body, lines, started))
        reader.start()
        assert started.wait(60)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        refused = httpx.get(f"{server.url}/v1/models", timeout=10)  # draining: new requests get 503
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert refused.json()["error"]["type"] == "service_unavailable"
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 503
        reader.join(120)
        assert server.proc.wait(60) == 0, server.log()[-3000:]
    finally:
        server.stop(signal.SIGKILL)
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"  # the in-flight stream was allowed to finish
    chunks = [json.loads(d) for d in data[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert sum(1 for c in chunks for ch in c["choices"] if ch["text"]) > 0
