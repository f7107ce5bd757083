"""A burst far over capacity: every request is served or shed with 429 + Retry-After, nothing else, and the server
is healthy afterwards."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import re
import threading

import httpx
import pytest
from test_reliability_support import shared_paced_server, wait_idle
from test_server_support import ServerProcess, tiny_server_args

pytestmark = pytest.mark.timeout(180)

MAX_NUM_SEQS, MAX_QUEUE = 2, 4
BURST = 5 * (MAX_NUM_SEQS + MAX_QUEUE)


@pytest.fixture(scope="module")
def two_slot_server(tiny_model) -> ServerProcess:
    # paced (10 ms a step at least), so the burst arrives while the first requests still run, on any machine; the
    # same arguments as test_reliability_disconnect's, so one process serves both files
    return shared_paced_server(*tiny_server_args(tiny_model), "--max-num-seqs", str(MAX_NUM_SEQS),
                         "--max-queue", str(MAX_QUEUE))


def _one(url: str, i: int, start: threading.Barrier) -> tuple[int, str]:
    """One request of the burst (chat or completions, streamed or not); returns (status, what it ended with)."""
    path = "/v1/chat/completions" if i % 2 else "/v1/completions"
    body: dict = {"model": "tiny", "max_tokens": 16, "ignore_eos": True, "stream": i % 4 < 2}
    body.update({"messages": [{"role": "user", "content": f"Hi {i}"}]} if i % 2 else {"prompt": f"Hi {i}"})
    start.wait(30)
    with httpx.stream("POST", f"{url}{path}", json=body, timeout=120) as response:
        raw = response.read().decode()
    if response.status_code == 429:
        assert response.headers["retry-after"].isdigit(), response.headers
        assert json.loads(raw)["error"]["type"] == "rate_limit_error"
        return 429, "shed"
    if response.status_code == 200 and body["stream"]:
        payloads = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
        assert payloads[-1] == "[DONE]" and all('"error"' not in p for p in payloads), raw[-500:]
        return 200, json.loads(payloads[-2])["choices"][0]["finish_reason"]
    if response.status_code == 200:
        return 200, json.loads(raw)["choices"][0]["finish_reason"]
    return response.status_code, raw[:300]


def test_burst_is_served_or_shed_with_429(two_slot_server):
    url = two_slot_server.url
    wait_idle(url)
    start = threading.Barrier(BURST)
    with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
        outcomes = list(pool.map(lambda i: _one(url, i, start), range(BURST)))
    statuses = collections.Counter(status for status, _ in outcomes)
    print(f"\nburst of {BURST} (max-num-seqs {MAX_NUM_SEQS}, max-queue {MAX_QUEUE}): {dict(statuses)}")
    assert set(statuses) <= {200, 429}, outcomes
    assert statuses[200] >= MAX_NUM_SEQS + MAX_QUEUE and statuses[429] > 0
    assert all(ending == "length" for status, ending in outcomes if status == 200)

    assert httpx.get(f"{url}/health").status_code == 200
    wait_idle(url)
    answer = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "Hi", "max_tokens": 4}, timeout=30)
    assert answer.status_code == 200
    metrics = httpx.get(f"{url}/metrics").text
    server_errors = re.findall(r'lucid_requests_total\{endpoint="/v1/[^"]*",status="5\d\d"\} ([0-9.]+)', metrics)
    assert not any(float(count) for count in server_errors), metrics
    assert two_slot_server.proc.poll() is None
