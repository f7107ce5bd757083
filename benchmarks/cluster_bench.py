"""lucid replicas on Ray Serve against one lucid server, all in one run (a markdown report).

    .venv/bin/python benchmarks/cluster_bench.py                  # everything, the default model; needs lucid[cluster]
    .venv/bin/python benchmarks/cluster_bench.py --parts multi-turn --configs single prefix    # hit rates only
    .venv/bin/python benchmarks/cluster_bench.py --model /tmp/tiny/hf --conversations 4 --turns 3 --quick

Configs, one server at a time (never two at once), each `lucid serve` on a free port:
  prefix   2 replicas x 1 CPU, lucid's prefix-affinity router
  default  2 replicas x 1 CPU, Ray Serve's default router (power of two choices)
  single   1 server, 2 threads            (what the replicas must match)
  single1  1 server, 1 thread             (the same compute as one replica: the Ray path's own overhead)

Parts, each run on the configs it compares (--parts and --configs pick a subset):
  multi-turn  prefix, default, single: C conversations x T turns at once, each turn's history growing (a shared
              system prompt, the model's answers, a new user message); prefix-cache hit rate = sum(cached_tokens) /
              sum(prompt_tokens) as the server reports them in usage, where the uncached tokens came from
              (lucid/bench/multi_turn.py), how many requests each replica served; TTFT median of follow-up turns.
  throughput  prefix, single: 16 concurrent streams of fixed-length completions (EOS ignored), output tok/s.
  overhead    prefix, single1: sequential one-token requests, p50 latency on `prefix` minus on `single1`.

A server that does not start or a part that fails is reported (in the table, with the server's log tail) and the
run goes on with the next; --json writes every figure, each request's record included, after each config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import asdict
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lucid.bench.multi_turn import account, follow_up_ttft_median_ms, run_multi_turn
from lucid.bench.report import fmt, markdown_table
from lucid.bench.runner import benchmark
from lucid.bench.server import lucid_server
from lucid.bench.stats import percentile, summarize
from lucid.config import EngineConfig

CONFIGS = {
    "prefix": ["--replicas", "2", "--cpus-per-replica", "1"],
    "default": ["--replicas", "2", "--cpus-per-replica", "1", "--replica-router", "default"],
    "single": ["--threads", "2"],
    "single1": ["--threads", "1"],
}
PARTS = {"multi-turn": ("prefix", "default", "single"), "throughput": ("prefix", "single"),
         "overhead": ("prefix", "single1")}
BLOCK_SIZE = EngineConfig().block_size  # the servers run with lucid's default KV block size
# Ray's memory monitor kills Ray workers (replicas) when the whole machine passes 95% of RAM, whoever uses it: on a
# shared box another process's peak would kill a replica mid-run.
SERVER_ENV = {"RAY_memory_usage_threshold": os.environ.get("RAY_memory_usage_threshold", "0.98")}


# ---- the parts ---------------------------------------------------------------------------------------------------
def replica_requests(url: str) -> dict[str, float]:
    """Requests each replica has served so far (the front's /metrics); {} for a single server."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {sample.labels["replica"]: sample.value for family in text_string_to_metric_families(text)
            if family.name == "lucid_replica_requests" for sample in family.samples
            if sample.name == "lucid_replica_requests_total"}


def multi_turn_part(url: str, args: argparse.Namespace) -> dict[str, Any]:
    before = replica_requests(url)
    records = asyncio.run(run_multi_turn(url, args.conversations, args.turns, args.max_tokens))
    after = replica_requests(url)
    total, by_turn = account(records, BLOCK_SIZE)
    return {"hit_rate": total.hit_rate, "hit_rate_without_lost_history": total.hit_rate_without_lost_history,
            "follow_up_ttft_ms": follow_up_ttft_median_ms(records), "account": asdict(total),
            "account_by_turn": {turn: asdict(a) for turn, a in sorted(by_turn.items())},
            "requests_by_replica": sorted((after[r] - before.get(r, 0) for r in after), reverse=True),
            "length_capped_answers": sum(r.finish_reason == "length" for r in records),
            "records": [asdict(r) for r in records]}


def throughput_part(url: str, args: argparse.Namespace) -> dict[str, Any]:
    result = asyncio.run(benchmark(url, num_prompts=args.stream_requests, input_len=args.input_len,
                                   output_len=args.output_len, concurrency=args.streams, progress=False))
    summary = summarize(result.results, result.duration_s)
    if summary.failed:
        raise RuntimeError(f"{summary.failed} throughput requests failed: {summary.errors}")
    return {"output_tok_s": summary.output_throughput}


def overhead_part(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Sequential one-token completions of a short prompt (cached after the first): mostly fixed per-request cost."""
    body = {"prompt": "The capital of France is", "max_tokens": 1, "temperature": 0}
    warm_up = 5  # first calls on each replica's path
    latencies = []
    with httpx.Client(timeout=120) as client:
        for i in range(args.overhead_requests + warm_up):
            started = time.perf_counter()
            client.post(f"{url}/v1/completions", json=body).raise_for_status()
            if i >= warm_up:
                latencies.append((time.perf_counter() - started) * 1000)
    return {"latencies_ms": latencies, "p50_ms": percentile(latencies, 50)}


PART_RUNNERS = {"multi-turn": multi_turn_part, "throughput": throughput_part, "overhead": overhead_part}


def run_config(name: str, parts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Start the config's server, run its parts; failures are recorded in figures["errors"], never raised."""
    serve_args = [*CONFIGS[name], "--kv-cache-memory", args.kv_cache_memory, *args.serve_args.split()]
    print(f"## {name}: lucid serve {' '.join(serve_args)}  (parts: {', '.join(parts)})", flush=True)
    figures: dict[str, Any] = {"errors": {}, "seconds": {}}
    started = time.perf_counter()
    server = lucid_server(args.model, serve_args, env=SERVER_ENV)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - reported, and the next config still runs
        figures["errors"]["startup"] = f"{type(exc).__name__}: {exc}"
        print(f"   startup failed: {exc}", flush=True)
        return figures
    try:
        figures["startup_s"] = server.startup_s
        for part in parts:
            part_started = time.perf_counter()
            try:
                figures[part] = PART_RUNNERS[part](server.url, args)
            except Exception as exc:  # noqa: BLE001 - reported with the server's log, and the next part runs
                figures["errors"][part] = f"{type(exc).__name__}: {exc}\n--- server log tail ---\n" \
                                          f"{server.log_tail(1500)}"
                print(f"   {part} failed: {type(exc).__name__}: {exc}", flush=True)
            figures["seconds"][part] = time.perf_counter() - part_started
            print(f"   {part}: {figures['seconds'][part]:.0f} s {summary_line(figures.get(part))}", flush=True)
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)
    figures["seconds"]["total"] = time.perf_counter() - started
    return figures


def summary_line(part: dict[str, Any] | None) -> str:
    if not part:
        return ""
    keep = ("hit_rate", "hit_rate_without_lost_history", "follow_up_ttft_ms", "requests_by_replica",
            "length_capped_answers", "output_tok_s", "p50_ms")
    return json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in part.items() if k in keep})


# ---- the report --------------------------------------------------------------------------------------------------
def account_table(results: dict[str, dict]) -> str:
    """Per config and turn: where the uncached prompt tokens came from (lucid/bench/multi_turn.py)."""
    rows = []
    for name, figures in results.items():
        part = figures.get("multi-turn")
        if not part:
            continue
        for turn, a in [*part["account_by_turn"].items(), ("all", part["account"])]:
            hit = a["cached"] / a["prompt"] if a["prompt"] else float("nan")
            rows.append([name, str(turn), str(a["requests"]), str(a["prompt"]), str(a["cached"]), f"{hit:.3f}",
                         str(a["first_turns"]), str(a["new_messages"]), str(a["partial_blocks"]),
                         str(a["lost_history"])])
    return markdown_table(["config", "turn", "requests", "prompt tokens", "cached", "hit rate", "uncached: first turns",
                           "new messages", "partial blocks", "lost history"], rows)


def report(results: dict[str, dict]) -> str:
    def get(config: str, part: str, key: str) -> Any:
        return (results.get(config, {}).get(part) or {}).get(key)

    def ratio(a: float | None, b: float | None, target: str) -> str:
        if a is None or b is None:
            return "not measured"
        return f"{fmt(a)} / {fmt(b)} = {a / b:.2f}x ({target})"

    rows = []
    for config, label in (("prefix", "prefix router (target >= 0.85)"), ("default", "Serve's default router"),
                          ("single", "one server")):
        hit = get(config, "multi-turn", "hit_rate")
        if hit is not None:
            split = get(config, "multi-turn", "requests_by_replica")
            rows.append([f"prefix-cache hit rate, {label}",
                         f"{hit:.3f} (no history lost: {get(config, 'multi-turn', 'hit_rate_without_lost_history'):.3f}"
                         + (f"; requests per replica {'/'.join(str(int(n)) for n in split)})" if split else ")")])
    ttft = {config: get(config, "multi-turn", "follow_up_ttft_ms") for config in ("prefix", "default", "single")}
    rows.append(["follow-up TTFT median ms: 2 replicas (prefix) / 1 server x 2 threads",
                 ratio(ttft["prefix"], ttft["single"], "target <= 1.3x")])
    if ttft["default"] is not None:
        rows.append(["follow-up TTFT median ms, default router", fmt(ttft["default"])])
    rows.append(["output tok/s at 16 streams: 2 replicas x 1 CPU / 1 server x 2 threads",
                 ratio(get("prefix", "throughput", "output_tok_s"), get("single", "throughput", "output_tok_s"),
                       "target >= 0.9x")])
    p50, p50_single1 = get("prefix", "overhead", "p50_ms"), get("single1", "overhead", "p50_ms")
    if p50 is not None and p50_single1 is not None:
        rows.append(["one-token request p50 ms: 2 replicas / 1 server x 1 thread", f"{fmt(p50)} / {fmt(p50_single1)}"])
        rows.append(["Ray path overhead per request, p50 ms (target <= 15)", fmt(p50 - p50_single1)])
    startups = [f"{name} {fmt(f['startup_s'])}" for name, f in results.items() if "startup_s" in f]
    rows.append(["startup s", ", ".join(startups) or "-"])
    rows.append(["run time s", ", ".join(f"{name} {fmt(f['seconds'].get('total', float('nan')), 0)}"
                                         for name, f in results.items())])
    lines = [markdown_table(["measure", "value"], rows)]
    if any(f.get("multi-turn") for f in results.values()):
        lines += ["", "Uncached prompt tokens by origin (multi-turn):", "", account_table(results)]
    errors = [(name, part, message) for name, f in results.items() for part, message in f["errors"].items()]
    if errors:
        lines += ["", "Errors:"] + [f"- {name} / {part}: {message}" for name, part, message in errors]
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model to serve (default: the default model)")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=48, help="answer length cap per turn")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--stream-requests", type=int, default=48, help="requests of the throughput part")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--overhead-requests", type=int, default=40)
    parser.add_argument("--kv-cache-memory", default="256M", help="per server or replica")
    parser.add_argument("--serve-args", default="", help="more options for every lucid serve")
    parser.add_argument("--json", default=None, metavar="PATH", help="write all figures here after each config")
    parser.add_argument("--quick", action="store_true", help="small numbers, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.stream_requests, args.output_len, args.overhead_requests = 16, 16, 10
    started = time.perf_counter()
    results: dict[str, dict] = {}
    for name in args.configs:
        parts = [part for part in args.parts if name in PARTS[part]]
        if not parts:
            continue
        results[name] = run_config(name, parts, args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    print()
    print(report(results))
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")
    return 1 if any(f["errors"] for f in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
