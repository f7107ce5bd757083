"""The measuring core: send a list of requests with bounded concurrency or Poisson arrivals, and time them all.

    result = await benchmark("http://127.0.0.1:8000", num_prompts=16, concurrency=4)
    print(result.summary.output_throughput)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lucid.bench.client import Target, send
from lucid.bench.prompts import BenchRequest, make_requests
from lucid.bench.stats import BenchSummary, RequestResult, summarize


@dataclass
class BenchResult:
    """Every request's timings, the wall time of the run, and how the load was offered."""

    results: list[RequestResult]
    duration_s: float
    concurrency: int | None
    rate: float | None

    @property
    def summary(self) -> BenchSummary:
        return summarize(self.results, self.duration_s)


def new_client(api_key: str | None = None, timeout: float = 600.0) -> httpx.AsyncClient:
    """An HTTP client with no connection cap of its own: the benchmark, not the client, decides what is in flight."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0), headers=headers,
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))


async def served_model(client: httpx.AsyncClient, url: str) -> str:
    """The first model the server lists at /v1/models."""
    response = await client.get(f"{url}/v1/models")
    response.raise_for_status()
    return response.json()["data"][0]["id"]


def _describe(concurrency: int | None, rate: float | None) -> str:
    parts = [f"rate {rate:g}/s" if rate else "", f"concurrency {concurrency}" if concurrency else ""]
    return ", ".join(p for p in parts if p) or "all at once"


async def run_benchmark(target: Target, requests: Sequence[BenchRequest], *, concurrency: int | None = None,
                        rate: float | None = None, seed: int = 0, max_duration: float | None = None,
                        drain_timeout: float | None = None, progress: bool = True,
                        client: httpx.AsyncClient | None = None) -> BenchResult:
    """Send `requests` and time each.

    concurrency: at most this many in flight (a closed loop when alone). rate: requests arrive as a Poisson process
    of this many per second (an open loop), whatever is in flight; both may be given. Neither: all at once.
    max_duration: no request starts after this many seconds. drain_timeout: requests still running this long after
    the last one started are cancelled and count as failed with status "unfinished".
    """
    own_client = client is None
    client = client or new_client()
    rng = random.Random(seed)
    limit = asyncio.Semaphore(concurrency) if concurrency else None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not progress, transient=False)
    task_id = bar.add_task(_describe(concurrency, rate), total=len(requests))
    t0 = time.perf_counter()

    async def one(request: BenchRequest) -> RequestResult:
        if limit is None:
            result = await send(client, target, request, t0)
        else:
            async with limit:
                result = await send(client, target, request, t0)
        bar.advance(task_id)
        return result

    tasks: list[asyncio.Task[RequestResult]] = []
    arrival = 0.0
    try:
        with bar:
            for request in requests:
                if rate:
                    arrival += rng.expovariate(rate)
                    await asyncio.sleep(max(0.0, arrival - (time.perf_counter() - t0)))
                if max_duration is not None and time.perf_counter() - t0 > max_duration:
                    break
                tasks.append(asyncio.create_task(one(request)))
            done, pending = await asyncio.wait(tasks, timeout=drain_timeout) if tasks else (set(), set())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        if own_client:
            await client.aclose()
    duration = time.perf_counter() - t0
    results = [task.result() for task in tasks if task in done]
    results += [RequestResult(ok=False, status="unfinished", requested_tokens=0) for _ in pending]
    return BenchResult(results, duration, concurrency, rate)


async def benchmark(url: str, model: str | None = None, *, num_prompts: int = 16, input_len: int = 128,
                    output_len: int = 128, concurrency: int | None = None, rate: float | None = None,
                    endpoint: str = "completions", api_key: str | None = None,
                    extra_body: dict[str, Any] | None = None, seed: int = 0, progress: bool = True,
                    max_duration: float | None = None, drain_timeout: float | None = None,
                    warmup: int = 1) -> BenchResult:
    """Make prompts with the server's tokenizer, warm the server up, then run_benchmark. `model`: the first listed."""
    url = url.rstrip("/")
    async with new_client(api_key) as client:
        model = model or await served_model(client, url)
        target = Target(url, model, endpoint, api_key, extra_body=dict(extra_body or {}))
        requests = await make_requests(client, url, model, num_prompts + warmup, input_len, output_len, seed,
                                       chat=endpoint == "chat")
        for request in requests[num_prompts:]:  # not timed: first-call costs (lazy init, compilation) stay out
            await send(client, target, BenchRequest(request.prompt, min(output_len, 4)), time.perf_counter())
        return await run_benchmark(target, requests[:num_prompts], concurrency=concurrency, rate=rate, seed=seed,
                                   max_duration=max_duration, drain_timeout=drain_timeout, progress=progress,
                                   client=client)
