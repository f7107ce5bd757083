"""Serving latency and throughput of `lucid serve` at concurrency 1, 4 and 16 (a markdown table).

    .venv/bin/python benchmarks/serve_bench.py                        # starts lucid serve on the default model
    .venv/bin/python benchmarks/serve_bench.py --url http://127.0.0.1:8000 --levels 1 8

Each level streams rounds x concurrency requests (at least 4) of --input-len prompt tokens and --output-len output
tokens (EOS suppressed) through /v1/completions, and reports TTFT, time per output token (TPOT) and inter-token
latency (ITL), median and p99, and the output tokens per second of all requests together.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from lucid.bench.report import errors_text, fmt, markdown_table
from lucid.bench.server import lucid_server
from lucid.bench.stats import BenchSummary
from lucid.bench.sweep import concurrency_sweep, prompts_for


def table(summaries: dict[int, BenchSummary], rounds: int) -> str:
    header = ["concurrency", "requests", "TTFT median ms", "TTFT p99 ms", "TPOT median ms", "TPOT p99 ms",
              "ITL median ms", "ITL p99 ms", "output tok/s", "req/s", "errors"]
    rows = [[str(level), str(prompts_for(level, rounds)), fmt(s.ttft.median), fmt(s.ttft.p99), fmt(s.tpot.median),
             fmt(s.tpot.p99), fmt(s.itl.median), fmt(s.itl.p99), fmt(s.output_throughput), fmt(s.request_throughput, 2),
             errors_text(s.errors)] for level, s in summaries.items()]
    return markdown_table(header, rows)


def scaling_line(summaries: dict[int, BenchSummary]) -> str:
    levels = sorted(summaries)
    low, high = summaries[levels[0]], summaries[levels[-1]]
    if len(levels) < 2 or not low.output_throughput:
        return ""
    ratio = high.output_throughput / low.output_throughput
    return (f"Output tok/s at concurrency {levels[-1]} / at {levels[0]}: {fmt(high.output_throughput)} / "
            f"{fmt(low.output_throughput)} = **{ratio:.2f}x**")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running server (default: start lucid serve)")
    parser.add_argument("--model", default=None, help="model to serve (default: the default model)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16], help="concurrency levels (1 4 16)")
    parser.add_argument("--rounds", type=int, default=2, help="requests per level = rounds x concurrency (min 4)")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--serve-args", default="", help="more options for lucid serve, e.g. '--max-num-seqs 32'")
    args = parser.parse_args()

    def sweep(url: str) -> dict[int, BenchSummary]:
        return concurrency_sweep(url, args.levels, rounds=args.rounds, input_len=args.input_len,
                                 output_len=args.output_len)

    if args.url:
        summaries, where = sweep(args.url.rstrip("/")), args.url
    else:
        with lucid_server(args.model, shlex.split(args.serve_args)) as server:
            summaries = sweep(server.url)
            where = f"lucid serve {args.model or '(default model)'}, ready after {server.startup_s:.1f} s"
    print(f"## Serving: {where}\n")
    print(f"{args.input_len} prompt tokens, {args.output_len} output tokens per request (EOS suppressed), "
          f"streamed /v1/completions; {os.cpu_count()} CPUs.\n")
    print(table(summaries, args.rounds))
    print(f"\n{scaling_line(summaries)}\n")
    print(f"Command: `{shlex.join([os.path.relpath(sys.executable), *sys.argv])}`")
    return 0 if all(s.failed == 0 for s in summaries.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
