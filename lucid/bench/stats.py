"""The numbers a benchmark reports, computed from per-request timings: percentiles, TTFT, TPOT, ITL, throughput."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RequestResult:
    """One request as the client saw it. Times are seconds; `start` is relative to the benchmark's start."""

    ok: bool
    status: str                      # "200", "429", "timeout", "connection", "stream-error", ...
    start: float = 0.0
    latency: float = 0.0             # send -> last byte of the stream
    ttft: float = 0.0                # send -> first chunk carrying text
    itl: list[float] = field(default_factory=list)  # gaps between successive text chunks
    prompt_tokens: int = 0           # from the streamed usage; 0 when the server sent none
    output_tokens: int = 0           # from the streamed usage, else the number of text chunks
    requested_tokens: int = 0
    error: str = ""

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first; None for a one-token answer."""
        if self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Distribution:
    """Summary of one latency in milliseconds."""

    mean: float
    median: float
    p90: float
    p99: float
    count: int

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Distribution:
        ms = [s * 1000.0 for s in seconds]
        mean = sum(ms) / len(ms) if ms else math.nan
        return cls(mean, percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), len(ms))


@dataclass
class BenchSummary:
    """Everything `lucid bench` prints, from a list of RequestResults and the wall time they took."""

    duration_s: float
    completed: int
    failed: int
    errors: dict[str, int]
    short_outputs: int               # finished with fewer tokens than asked (EOS not suppressed?)
    request_throughput: float        # completed requests per second
    output_throughput: float         # output tokens per second, all requests together
    input_throughput: float
    mean_prompt_tokens: float
    mean_output_tokens: float
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    latency: Distribution

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(results: Sequence[RequestResult], duration_s: float) -> BenchSummary:
    """Aggregate the successful requests' timings; failed ones only count in `failed` and `errors`."""
    ok = [r for r in results if r.ok]
    errors = Counter(r.status for r in results if not r.ok)
    duration = max(duration_s, 1e-9)
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    tpots = [t for r in ok if (t := r.tpot) is not None]
    return BenchSummary(
        duration_s=duration_s,
        completed=len(ok),
        failed=len(results) - len(ok),
        errors=dict(sorted(errors.items())),
        short_outputs=sum(1 for r in ok if r.requested_tokens and r.output_tokens < r.requested_tokens),
        request_throughput=len(ok) / duration,
        output_throughput=output_tokens / duration,
        input_throughput=prompt_tokens / duration,
        mean_prompt_tokens=prompt_tokens / len(ok) if ok else math.nan,
        mean_output_tokens=output_tokens / len(ok) if ok else math.nan,
        ttft=Distribution.of([r.ttft for r in ok]),
        tpot=Distribution.of(tpots),
        itl=Distribution.of([gap for r in ok for gap in r.itl]),
        latency=Distribution.of([r.latency for r in ok]),
    )
