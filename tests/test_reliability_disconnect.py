"""Clients that leave: hundreds of dropped streams and timed-out requests leave nothing behind in the engine, and
cancelling a queued request touches no other client's request."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import httpx
import pytest
from test_reliability_support import scrape, shared_paced_server, stream_payloads, wait_idle
from test_server_support import ServerProcess, shared_server, tiny_server_args

pytestmark = pytest.mark.timeout(240)

DROPPED_STREAMS = 200
TIMED_OUT = 50
CLIENTS = 16
TIMEOUT = 0.2
LONG = {"model": "tiny", "max_tokens": 440, "ignore_eos": True}  # with the chat template, under 512
SETTLE_STEPS = 5  # "within a few engine steps": an abort is applied at the step after the client leaves


@pytest.fixture(scope="module")
def tiny_server(tiny_model) -> ServerProcess:
    return shared_server(*tiny_server_args(tiny_model))


def _drop_after_first_chunk(url: str, i: int) -> bool:
    """Open a long stream (chat or completions, alternately), read its first data chunk, hang up."""
    if i % 2:
        path, body = "/v1/chat/completions", {**LONG, "messages": [{"role": "user", "content": f"Story {i}"}]}
    else:
        path, body = "/v1/completions", {**LONG, "prompt": f"Once upon a time {i}"}
    with httpx.stream("POST", f"{url}{path}", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                json.loads(line[6:])  # a real chunk, not an error
                return True
    return False


def _time_out(url: str, i: int) -> bool:
    try:
        httpx.post(f"{url}/v1/completions", json={**LONG, "prompt": f"Tell me {i}"}, timeout=TIMEOUT)
    except httpx.TimeoutException:
        return True
    return False  # answered within the timeout: 440 tokens take longer even on a fast machine


def test_dropped_clients_leave_nothing_behind(tiny_server):
    url = tiny_server.url
    wait_idle(url)
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        started = time.monotonic()
        assert all(pool.map(lambda i: _drop_after_first_chunk(url, i), range(DROPPED_STREAMS)))
        streams = wait_idle(url)
        print(f"\n{DROPPED_STREAMS} streams dropped after their first chunk in {time.monotonic() - started:.1f} s; "
              f"engine idle {streams.seconds:.2f} s / {streams.steps} steps after the last one")
        started = time.monotonic()
        assert all(pool.map(lambda i: _time_out(url, i), range(TIMED_OUT)))
        timeouts = wait_idle(url)
        print(f"{TIMED_OUT} non-streaming requests dropped by a {TIMEOUT} s client timeout in "
              f"{time.monotonic() - started:.1f} s; engine idle {timeouts.seconds:.2f} s / {timeouts.steps} steps "
              "after the last one")
    assert streams.steps <= SETTLE_STEPS and timeouts.steps <= SETTLE_STEPS
    assert timeouts.metrics["lucid_kv_cache_usage_ratio"] == 0
    assert timeouts.metrics["lucid_http_requests_in_flight"] == 0

    started = time.monotonic()
    fresh = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 16,
                                                      "ignore_eos": True}, timeout=30)
    elapsed = time.monotonic() - started
    print(f"a fresh 16-token request afterwards: {elapsed:.2f} s")
    assert fresh.status_code == 200 and fresh.json()["usage"]["completion_tokens"] == 16
    assert elapsed < 10


@pytest.fixture(scope="module")
def two_slot_server(tiny_model) -> ServerProcess:
    # paced (10 ms a step at least), so the two running requests outlast the queued one's client timeout anywhere;
    # test_reliability_overload uses the same process
    return shared_paced_server(*tiny_server_args(tiny_model), "--max-num-seqs", "2", "--max-queue", "4")


def _poll(url: str, until, timeout: float = 10) -> dict[str, float]:  # noqa: ANN001 - a predicate on metrics
    deadline = time.monotonic() + timeout
    m = scrape(url)
    while not until(m):
        assert time.monotonic() < deadline, m
        time.sleep(0.02)
        m = scrape(url)
    return m


def test_cancelling_a_queued_request_touches_no_other(two_slot_server):
    url = two_slot_server.url
    wait_idle(url)
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": True, "temperature": 0}
    # the running two take 200 steps (2 s at least); the queued one's client gives up after 1 s
    results: dict[str, object] = {}
    first_chunks = threading.Barrier(3)

    def long_stream(name: str) -> None:  # takes one of the two slots
        payloads = []
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    payloads.append(line[6:])
                    if len(payloads) == 1:
                        first_chunks.wait(60)
        results[name] = (r.status_code, payloads)

    def cancelled() -> None:
        try:
            httpx.post(f"{url}/v1/completions", json=body, timeout=1.0)
        except httpx.TimeoutException as exc:
            results["cancelled"] = exc

    def survivor() -> None:
        results["survivor"] = httpx.post(f"{url}/v1/completions", json={**body, "max_tokens": 8}, timeout=120)

    threads = {name: threading.Thread(target=long_stream, args=(name,)) for name in ("a", "b")}
    for t in threads.values():
        t.start()
    first_chunks.wait(60)
    threads["cancelled"] = threading.Thread(target=cancelled)
    threads["cancelled"].start()
    time.sleep(0.2)
    threads["survivor"] = threading.Thread(target=survivor)  # queued behind the one to be cancelled
    threads["survivor"].start()
    queued = _poll(url, lambda m: m["lucid_num_requests_waiting"] == 2)
    assert queued["lucid_num_requests_running"] == 2
    threads["cancelled"].join(30)
    assert isinstance(results.get("cancelled"), httpx.TimeoutException)
    after = _poll(url, lambda m: m["lucid_num_requests_waiting"] == 1)  # the cancelled one left the queue ...
    assert after["lucid_num_requests_running"] == 2, after              # ... and nothing else moved
    for t in threads.values():
        t.join(120)

    for name in ("a", "b"):
        status, payloads = results[name]
        assert status == 200 and payloads[-1] == "[DONE]"
        chunks = [json.loads(p) for p in payloads[:-1]]
        assert all("error" not in c for c in chunks)
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert sum(1 for c in chunks if c["choices"][0]["text"]) > 0
    survived = results["survivor"]
    assert survived.status_code == 200, survived.text
    assert survived.json()["usage"]["completion_tokens"] == 8
    assert survived.json()["choices"][0]["finish_reason"] == "length"
    wait_idle(url)
    status, payloads = stream_payloads(url, "/v1/completions", {**body, "max_tokens": 4})
    assert status == 200 and payloads[-1] == "[DONE]"
