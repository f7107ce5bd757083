"""Open-loop load test of a lucid server: Poisson arrivals at rising rates, until it saturates (markdown output).

    .venv/bin/python benchmarks/load_test.py                              # starts lucid serve on the default model
    .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:8000 --rates 1 2 4 --seconds 20

Each rate sends requests as a Poisson process for at most --seconds (and at most --max-requests), whatever is
still in flight: an overloaded server sees its queue grow, and answers 429 once the queue is full. Requests still
running --drain seconds after the last one was sent are cancelled and count as "unfinished". Loopback only.

A rate counts as saturated when achieved throughput stops following the offered rate (below --follow of it), when
more than --max-error-share of the requests fail, or when TTFT p90 grows past --blowup times the lowest rate's.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import math
import os
import shlex
import sys
from dataclasses import dataclass
from urllib.parse import urlparse

from lucid.bench.report import errors_text, fmt, markdown_table
from lucid.bench.runner import benchmark
from lucid.bench.server import lucid_server
from lucid.bench.stats import BenchSummary


@dataclass
class RateResult:
    offered: float       # requests per second asked for
    sent: int
    summary: BenchSummary
    sent_rate: float     # requests per second actually sent: Poisson gaps can fall short of `offered` in the window

    @property
    def achieved(self) -> float:
        """Completed requests per second. The run's wall time minus one median request latency is about the span
        over which requests were sent, so a server that keeps up shows achieved close to offered."""
        span = self.summary.duration_s - (self.summary.latency.median / 1000 if self.summary.completed else 0)
        return self.summary.completed / max(span, 1e-9)

    @property
    def error_share(self) -> float:
        return self.summary.failed / self.sent if self.sent else 0.0


def saturation_reason(result: RateResult, baseline: RateResult, args: argparse.Namespace) -> str:
    """Why this rate counts as saturated, or "" if the server kept up."""
    if result.error_share > args.max_error_share:
        return f"{result.error_share:.0%} of requests failed"
    if result.achieved < args.follow * min(result.offered, result.sent_rate):
        return f"achieved {result.achieved:.2f} req/s of {min(result.offered, result.sent_rate):.2f} sent"
    base, now = baseline.summary.ttft.p90, result.summary.ttft.p90
    if result is not baseline and not math.isnan(base) and now > args.blowup * max(base, 1.0):
        return f"TTFT p90 {now / 1000:.1f} s, {now / base:.0f}x the lowest rate's"
    return ""


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_rates(url: str, args: argparse.Namespace) -> list[RateResult]:
    results = []
    for rate in args.rates:
        count = max(1, min(args.max_requests, math.ceil(rate * args.seconds)))
        result = asyncio.run(benchmark(url, num_prompts=count, input_len=args.input_len, output_len=args.output_len,
                                       rate=rate, seed=int(rate * 1000), max_duration=args.seconds,
                                       drain_timeout=args.drain))
        sent = len(result.results)
        # Cut off by the time window before `count` were sent: the rate that really arrived is sent / window.
        sent_rate = sent / args.seconds if sent < count else rate
        results.append(RateResult(rate, sent, result.summary, sent_rate))
    return results


def report(results: list[RateResult], args: argparse.Namespace) -> str:
    header = ["offered req/s", "sent", "ok", "achieved req/s", "output tok/s", "TTFT median ms", "TTFT p99 ms",
              "ITL median ms", "ITL p99 ms", "errors", "saturated"]
    rows, first_saturated = [], None
    for result in results:
        reason = saturation_reason(result, results[0], args)
        if reason and first_saturated is None:
            first_saturated = result
        s = result.summary
        rows.append([f"{result.offered:g}", str(result.sent), str(s.completed), fmt(result.achieved, 2),
                     fmt(s.output_throughput), fmt(s.ttft.median), fmt(s.ttft.p99), fmt(s.itl.median), fmt(s.itl.p99),
                     errors_text(s.errors), reason or "no"])
    verdict = (f"Saturates at **{first_saturated.offered:g} req/s**; the highest rate it kept up with: "
               f"{max((r.offered for r in results if r.offered < first_saturated.offered), default=0):g} req/s."
               if first_saturated else f"Kept up with every rate up to {results[-1].offered:g} req/s.")
    return markdown_table(header, rows) + "\n\n" + verdict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running lucid server on this machine (default: start one)")
    parser.add_argument("--model", default=None, help="model to serve (default: the default model)")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.5, 1, 2, 4, 8], help="req/s, in order")
    parser.add_argument("--seconds", type=float, default=30.0, help="longest sending time per rate (30)")
    parser.add_argument("--max-requests", type=int, default=200, help="most requests per rate (200)")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds in-flight requests may finish (60)")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--follow", type=float, default=0.8, help="achieved/offered below this = saturated (0.8)")
    parser.add_argument("--max-error-share", type=float, default=0.05, help="failed share above this = saturated")
    parser.add_argument("--blowup", type=float, default=5.0, help="TTFT p90 growth that counts as saturated (5)")
    parser.add_argument("--serve-args", default="", help="more options for lucid serve, e.g. '--max-queue 16'")
    args = parser.parse_args()
    if args.url and not is_loopback(args.url):
        parser.error(f"{args.url} is not a loopback address: this load test only runs against this machine")

    if args.url:
        results, where = run_rates(args.url.rstrip("/"), args), args.url
    else:
        with lucid_server(args.model, shlex.split(args.serve_args)) as server:
            results, where = run_rates(server.url, args), f"lucid serve {args.model or '(default model)'}"
    print(f"## Load test: {where}\n")
    print(f"Poisson arrivals, at most {args.seconds:g} s and {args.max_requests} requests per rate; {args.input_len} "
          f"prompt / {args.output_len} output tokens per request; {os.cpu_count()} CPUs.\n")
    print(report(results, args))
    print(f"\nCommand: `{shlex.join([os.path.relpath(sys.executable), *sys.argv])}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
