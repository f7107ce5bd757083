"""How fast lucid could serve compare.py's workload at 1 and 16 streams, from the engine's own step times.

    .venv/bin/python benchmarks/batch_ceiling.py              # default weights, 128-token prompts and answers
    .venv/bin/python benchmarks/batch_ceiling.py --streams 1 4 16

compare.py's served rows send `streams` requests at once, each a 128-token prompt and a 128-token answer, and count
output tokens over the wall time, prompts included. In-process, with no server, client or HTTP in the way, this
measures the two things that time is made of: the prompts' prefill (all `streams` prompts, as the scheduler batches
them) and a decode step with `streams` rows. Then

    ceiling tok/s = streams * answer / (prefill time + answer * step time)

is the most any server around this engine could show on this machine. On a 2-core CPU both phases are bound by
arithmetic once there are several rows (the int8 dot products of lucid/kernels run near what the cores allow), so a
16-stream ceiling near the served figure says the server costs little and the rest is the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time


def _run(engine: object, prompts: list[list[int]], params: object, tag: str) -> list[float]:
    """Add the prompts as one batch and step until all finish; each step's seconds."""
    for n, prompt in enumerate(prompts):
        engine.add_request(f"{tag}-{n}", prompt, params)  # type: ignore[attr-defined]
    times = []
    while engine.has_unfinished():  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        engine.step()  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
    return times


def measure(streams: int, prompt_len: int, answer_len: int, llm: object) -> dict[str, float]:
    from lucid import SamplingParams

    engine = llm.engine  # type: ignore[attr-defined]
    # Distinct prompts (no prefix-cache hits), as compare.py's sweep makes them.
    base = 1000 + streams * 7919
    prompts = [[(base + s * 131 + i * 17) % 30000 + 200 for i in range(prompt_len)] for s in range(streams)]
    # 1. The prompts' prefill, batched as the scheduler batches them (one token out each).
    prefill = sum(_run(engine, prompts, SamplingParams(temperature=0, max_tokens=1), f"prefill-{streams}"))
    # 2. The same prompts again, now from the prefix cache: after the first step every step is a decode step
    #    with `streams` rows, at the context lengths of the real workload.
    params = SamplingParams(temperature=0, max_tokens=answer_len, ignore_eos=True)
    step = statistics.median(_run(engine, prompts, params, f"decode-{streams}")[2:])
    ceiling = streams * answer_len / (prefill + answer_len * step)
    return {"prefill_s": prefill, "prefill_tok_s": streams * prompt_len / prefill, "step_ms": step * 1000,
            "ceiling": ceiling}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--answer-len", type=int, default=128)
    parser.add_argument("--quantization", default=None, help="weight format (default: lucid's default)")
    args = parser.parse_args()

    from lucid import LLM
    from lucid.config import DEFAULT_QUANTIZATION

    llm = LLM(None, dtype="bfloat16", quantization=args.quantization or DEFAULT_QUANTIZATION)
    measure(2, 32, 8, llm)  # warm-up: first-call costs out of the way
    rows = {s: measure(s, args.prompt_len, args.answer_len, llm) for s in args.streams}

    print(f"\n{args.prompt_len}-token prompts, {args.answer_len}-token answers, greedy, in-process\n")
    print("| streams | prefill (s) | prefill tok/s | decode step (ms) | ceiling output tok/s |")
    print("|---|---|---|---|---|")
    for s, r in rows.items():
        print(f"| {s} | {r['prefill_s']:.2f} | {r['prefill_tok_s']:.0f} | {r['step_ms']:.1f} | {r['ceiling']:.1f} |")
    low, high = min(rows), max(rows)
    if low != high:
        print(f"\nceiling at {high} streams / at {low}: {rows[high]['ceiling'] / rows[low]['ceiling']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
