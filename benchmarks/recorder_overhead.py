"""What the engine view costs the engine: step time with the step recorder off and on, at 16 concurrent streams.

    .venv/bin/python benchmarks/recorder_overhead.py                      # the default model, as `lucid serve` runs it
    .venv/bin/python benchmarks/recorder_overhead.py --streams 16 --tokens 64 --rounds 3

One engine, 16 greedy streams (EOS ignored, so every round does the same work), run for `--tokens` decode steps in
alternating rounds: recorder off, on, off, on, ... (alternating cancels drift on a shared machine). Reported:
  - decode step time off vs on (median of each round's mean step time), and their ratio;
  - the time spent inside `StepRecorder.record` as a share of the step time it recorded (the direct cost);
  - one `pool_snapshot` (run on the engine thread per poll, twice a second while the page is open) as a share
    of a second of engine time.
"""

from __future__ import annotations

import argparse
import statistics
import time

from lucid.config import DEFAULT_QUANTIZATION, EngineConfig
from lucid.engine.llm_engine import LLMEngine
from lucid.engine.recorder import StepRecorder, pool_snapshot
from lucid.sampling_params import SamplingParams

POLLS_PER_SECOND = 2


def one_round(engine: LLMEngine, streams: int, tokens: int, watch: bool, tag: str) -> tuple[float, float, int]:
    """(mean decode step seconds, seconds inside record, decode steps) for one round of `streams` requests."""
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    for i in range(streams):
        # Distinct prompts (no prefix sharing) of equal length, so every round does the same work.
        engine.add_request(f"{tag}-{i}", [1000 + i] * 8 + list(range(2000, 2024)), params)
    while engine.scheduler.waiting or any(s.num_computed_tokens < s.num_prompt_tokens
                                          for s in engine.scheduler.running):
        engine.step()                                           # prefill: not measured
    recorder = engine.recorder
    inside = 0.0
    original = recorder.record

    def timed_record(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        nonlocal inside
        started = time.perf_counter()
        original(*args, **kwargs)
        inside += time.perf_counter() - started

    recorder.record = timed_record  # type: ignore[method-assign]
    if watch:
        recorder.watch()
        recorder.idle_after = 1e9
    else:
        recorder.watching = False
    steps, started = 0, time.perf_counter()
    while engine.has_unfinished():
        engine.step()
        steps += 1
    elapsed = time.perf_counter() - started
    recorder.record = original  # type: ignore[method-assign]
    recorder.watching = False
    return elapsed / steps, inside, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--quantization", default=DEFAULT_QUANTIZATION)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48, help="decode steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (off and on alternate)")
    args = parser.parse_args()
    engine = LLMEngine.from_pretrained(args.model, quantization=args.quantization,
                                       engine_config=EngineConfig(max_num_seqs=args.streams))
    engine.recorder = StepRecorder()
    one_round(engine, args.streams, 4, False, "warmup")
    off, on, inside_share = [], [], []
    for r in range(args.rounds):
        off.append(one_round(engine, args.streams, args.tokens, False, f"off{r}")[0])
        step, inside, steps = one_round(engine, args.streams, args.tokens, True, f"on{r}")
        on.append(step)
        inside_share.append(inside / (step * steps))
    # A poll's snapshot, with 16 streams' blocks held.
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    for i in range(args.streams):
        engine.add_request(f"snap-{i}", [3000 + i] * 64, params)
    engine.step()
    started = time.perf_counter()
    for _ in range(20):
        pool_snapshot(engine.scheduler, engine.blocks)
    snapshot = (time.perf_counter() - started) / 20
    while engine.has_unfinished():
        engine.step()
    off_ms, on_ms = statistics.median(off) * 1e3, statistics.median(on) * 1e3
    print(f"{args.streams} streams, {args.tokens} decode steps per round, {args.rounds} rounds each")
    print(f"decode step: recorder off {off_ms:.2f} ms, on {on_ms:.2f} ms, ratio on/off {on_ms / off_ms:.4f}")
    print(f"time inside record(): {100 * statistics.median(inside_share):.3f}% of the recorded steps' time")
    print(f"pool snapshot per poll: {snapshot * 1e3:.2f} ms ({100 * snapshot * POLLS_PER_SECOND:.3f}% of engine "
          f"time at {POLLS_PER_SECOND} polls/s over {engine.blocks.num_blocks} blocks)")


if __name__ == "__main__":
    main()
