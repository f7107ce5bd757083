"""A bounded soak: a minute of mixed valid, invalid and cancelled traffic. After warm-up the server's RSS may grow
less than 5%, no answer is a 5xx, and the KV cache is empty once the traffic stops. Run with -s to see the drift."""

from __future__ import annotations

import collections
import random
import threading
import time

import httpx
import psutil
import pytest
from test_reliability_support import wait_idle
from test_server_support import ServerProcess, shared_server, tiny_server_args

pytestmark = pytest.mark.timeout(240)

WARMUP_SECONDS = 10.0
SOAK_SECONDS = 40.0
CLIENTS = 4
MAX_RSS_GROWTH = 0.05


@pytest.fixture(scope="module")
def tiny_server(tiny_model) -> ServerProcess:
    return shared_server(*tiny_server_args(tiny_model))


def _chat(i: int, **extra: object) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": f"Question {i}: why?"}], **extra}


def _stream_then_drop(client: httpx.Client, i: int) -> str:
    body = {"model": "tiny", "prompt": f"Tell a long story {i}", "max_tokens": 300, "ignore_eos": True,
            "stream": True}
    with client.stream("POST", "/v1/completions", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break
    return "dropped"


def _time_out(client: httpx.Client, i: int) -> str:
    # The tiny model decodes fast (> 1,000 tok/s with the inverse-CDF sampler): ask for almost its whole context
    # and give up after 0.1 s, so the client always leaves mid-generation.
    try:
        client.post("/v1/completions", json={"model": "tiny", "prompt": f"Long {i}", "max_tokens": 500,
                                             "ignore_eos": True}, timeout=0.1)
    except httpx.TimeoutException:
        return "timed out"
    return "answered"


def _status(response: httpx.Response) -> str:
    response.read()
    return str(response.status_code)


# Each kind of traffic: a function of (client, i) that returns an outcome label.
TRAFFIC = [
    lambda c, i: _status(c.post("/v1/chat/completions", json=_chat(i, max_tokens=12))),
    lambda c, i: _status(c.post("/v1/chat/completions", json=_chat(i, max_tokens=8, stream=True, n=2))),
    lambda c, i: _status(c.post("/v1/completions", json={"model": "tiny", "prompt": [f"a {i}", f"b {i}"],
                                                         "max_tokens": 10, "logprobs": 2})),
    lambda c, i: _status(c.post("/tokenize", json={"prompt": f"some text {i}"})),
    lambda c, i: _status(c.post("/v1/chat/completions", content=b"{not json")),
    lambda c, i: _status(c.post("/v1/chat/completions", json=_chat(i, temperature=9))),
    lambda c, i: _status(c.post("/v1/completions", json={"model": "tiny", "prompt": [7] * 600})),
    lambda c, i: _status(c.post("/v1/completions", json={"model": "nope", "prompt": "x"})),
    _stream_then_drop,
    _time_out,
]


def _traffic(url: str, seed: int, stop: threading.Event, outcomes: collections.Counter) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60) as client:
        i = 0
        while not stop.is_set():
            i += 1
            outcomes[rng.choice(TRAFFIC)(client, i)] += 1


def _run_traffic(url: str, seconds: float, seed: int) -> collections.Counter:
    stop = threading.Event()
    outcomes: collections.Counter = collections.Counter()
    workers = [threading.Thread(target=_traffic, args=(url, seed + k, stop, outcomes)) for k in range(CLIENTS)]
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join(60)
    return outcomes


def test_soak_memory_and_kv_return_to_baseline(tiny_server):
    url = tiny_server.url
    process = psutil.Process(tiny_server.proc.pid)
    warmup = _run_traffic(url, WARMUP_SECONDS, seed=1)
    wait_idle(url)
    before = process.memory_info().rss
    outcomes = _run_traffic(url, SOAK_SECONDS, seed=100)
    settled = wait_idle(url)
    after = process.memory_info().rss
    drift = (after - before) / before
    print(f"\nsoak: {sum(warmup.values())} warm-up requests, then {sum(outcomes.values())} in {SOAK_SECONDS:.0f} s "
          f"by {CLIENTS} clients: {dict(sorted(outcomes.items()))}")
    print(f"RSS after warm-up {before / 2**20:.1f} MiB, after the soak {after / 2**20:.1f} MiB: drift {drift:+.2%}; "
          f"KV blocks back to 0 in {settled.seconds:.2f} s / {settled.steps} engine steps")
    assert not [o for o in outcomes | warmup if o.startswith("5")], outcomes | warmup
    assert outcomes["200"] > 0 and outcomes["400"] > 0 and outcomes["dropped"] > 0 and outcomes["timed out"] > 0
    assert drift < MAX_RSS_GROWTH
    assert settled.metrics["lucid_kv_cache_usage_ratio"] == 0
    assert httpx.get(f"{url}/health").status_code == 200
