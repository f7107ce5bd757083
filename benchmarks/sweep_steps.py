"""compare.py's served load, in-process, with each engine step classified by what it ran.

    .venv/bin/python benchmarks/sweep_steps.py                 # 16 streams, then 1, greedy
    .venv/bin/python benchmarks/sweep_steps.py --streams 16 --temperature 0.7

compare.py's served sweep keeps `streams` requests in flight (a closed loop: a new one as soon as one finishes),
2 x `streams` requests in all, each a 128-token prompt and a 128-token answer, and counts output tokens over the
wall time. This runs the same load on the engine directly (no server, client or HTTP) and sorts its steps into
prompt-only steps, mixed steps (decode rows plus a prompt chunk: the scheduler feeds a new prompt 32 tokens a step
while others decode) and decode-only steps, with the time each kind took. It shows what the 16-stream figure is
made of: half its rows are prompt rows. Docs/BENCHMARKS.md "Session 9" has figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from typing import Any


def prompt(k: int, length: int) -> list[int]:
    """A distinct prompt per request (no prefix-cache hits), as compare.py's sweep makes them."""
    return [(1000 + k * 977 + i * 17 * (k % 7 + 1)) % 30000 + 200 for i in range(length)]


def step_rows(record: dict[str, Any]) -> tuple[int, int]:
    """(decode rows, prompt tokens) of one of the engine's step records; a full-batch decode step of `streams`
    streams is (streams, 0)."""
    decode = sum(1 for item in record["items"] if item["kind"] == "decode")
    prompt = sum(item["tokens"] for item in record["items"] if item["kind"] == "prefill")
    return decode, prompt


def closed_loop(engine: Any, streams: int, requests: int, prompt_len: int, answer_len: int,
                temperature: float, tag: str, first: int) -> dict[str, Any]:
    """Run the load with prompts first, first + 1, ... (each run its own: none may come from the prefix cache);
    the output tok/s and, per kind of step, (count, seconds), and the full-batch decode steps' median."""
    from lucid import SamplingParams

    params = SamplingParams(temperature=temperature, max_tokens=answer_len, ignore_eos=True)
    recorder = engine.recorder          # the engine's own step records (what the engine view page shows)
    last, _ = recorder.since(0)         # records of this run come after this id
    sent = tokens = steps = 0
    start = time.perf_counter()
    while sent < streams:
        engine.add_request(f"{tag}-{sent}", prompt(first + sent, prompt_len), params)
        sent += 1
    while engine.has_unfinished():
        recorder.watch()                # keeps it recording (it lapses a few seconds after the last watch)
        steps += 1
        for output in engine.step():
            if output.finished:
                tokens += len(output.outputs[0].token_ids)
                if sent < requests:
                    engine.add_request(f"{tag}-{sent}", prompt(first + sent, prompt_len), params)
                    sent += 1
    wall = time.perf_counter() - start
    _, records = recorder.since(last)
    if len(records) != steps:  # the recorder keeps its latest 2,000 steps
        raise RuntimeError(f"{steps} steps ran but {len(records)} were recorded: run a shorter load")
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    full = []
    for record in records:
        decode, prefill = step_rows(record)
        kind = "decode only" if prefill == 0 else "prompt only" if decode == 0 else "decode + prompt chunk"
        by_kind[kind][0] += 1
        by_kind[kind][1] += record["seconds"]
        if prefill == 0 and decode == streams:
            full.append(record["seconds"])
    return {"tok_s": tokens / wall, "tokens": tokens, "wall": wall, "steps": len(records), "by_kind": dict(by_kind),
            "full_step_ms": statistics.median(full) * 1000 if full else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[16, 1])
    parser.add_argument("--rounds", type=int, default=2, help="requests = rounds x streams (2)")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--answer-len", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args()

    from lucid import LLM
    from lucid.config import DEFAULT_QUANTIZATION

    engine = LLM(quantization=DEFAULT_QUANTIZATION).engine
    closed_loop(engine, 2, 2, 32, 8, args.temperature, "warm-up", 100_000)  # first-call costs out of the way
    results = {}
    for run, streams in enumerate(args.streams):
        r = closed_loop(engine, streams, args.rounds * streams, args.prompt_len, args.answer_len, args.temperature,
                        f"s{streams}", 10_000 * run)
        results[streams] = r
        print(f"\n{streams} streams: {r['tok_s']:.1f} output tok/s ({r['wall']:.2f} s, {r['steps']} steps)")
        for kind, (count, seconds) in r["by_kind"].items():
            print(f"  {kind:<22} {count:4d} steps {seconds:6.2f} s  ({seconds / count * 1000:6.1f} ms a step)")
        if r["full_step_ms"] is not None:
            print(f"  full {streams}-row decode step: {r['full_step_ms']:.1f} ms (median)")
    if len(results) > 1:
        high, low = max(results), min(results)
        print(f"\n{high} streams / {low}: {results[high]['tok_s'] / results[low]['tok_s']:.2f}x")


if __name__ == "__main__":
    main()
