"""Where one engine step goes at a given batch: the fused layers, the lm_head, the sampler, the whole step.

    .venv/bin/python benchmarks/step_phases.py --streams 16 --temperature 0.7
    .venv/bin/python benchmarks/step_phases.py --streams 1

In-process, the default weights: `streams` distinct 128-token prompts are added at once and decoded together for
`--tokens` steps (EOS ignored), twice (the first pass warms the caches); each phase is timed around the call that makes
it (ModelRunner._fused_forward, the model's compute_logits, the sampler), and the medians are taken over the second
pass's full-batch steps only: every one of the `streams` sequences decoding and no prompt chunk in the step. (The
prompts do not all prefill in the first step: the scheduler admits 512 prompt tokens, then 32 a step while others
decode, so the first ~48 steps of 16 streams carry prompt chunks and the last ones fewer rows as the first-admitted
finish. A median over "the last `tokens` steps" mixed those in.) Docs/BENCHMARKS.md "Session 9" has figures; pair
runs in turns to compare two builds on a noisy box.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

PHASES = ("fused layers", "lm_head (compute_logits)", "sampler")


def timed(fn: Callable[..., Any], name: str, into: dict[str, float]) -> Callable[..., Any]:
    """`fn`, adding its wall time to into[name] on each call."""
    def wrapper(*args: Any) -> Any:
        t0 = time.perf_counter()
        result = fn(*args)
        into[name] = into.get(name, 0.0) + time.perf_counter() - t0
        return result
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=128, help="tokens each stream generates (128)")
    args = parser.parse_args()

    from sweep_steps import step_rows  # benchmarks/ is on sys.path when this file runs as a script

    import lucid.engine.model_runner as model_runner
    from lucid import LLM, SamplingParams
    from lucid.config import DEFAULT_QUANTIZATION

    engine = LLM(quantization=DEFAULT_QUANTIZATION).engine
    runner = engine.runner
    this_step: dict[str, Any] = {}
    runner._fused_forward = timed(runner._fused_forward, PHASES[0], this_step)
    runner.model.compute_logits = timed(runner.model.compute_logits, PHASES[1], this_step)
    model_runner.sample = timed(model_runner.sample, PHASES[2], this_step)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.tokens, ignore_eos=True)
    phases: dict[str, list[float]] = {}
    steps = 0
    last, _ = engine.recorder.since(0)
    for rep in range(2):
        phases = {name: [] for name in (*PHASES, "step")}
        steps = 0
        for n in range(args.streams):  # distinct prompts: no prefix-cache hits
            engine.add_request(f"p{rep}-{n}", [(1000 + rep * 977 + n * 131 + i * 17) % 30000 + 200 for i in range(128)],
                               params)
        while engine.has_unfinished():
            this_step.clear()
            engine.recorder.watch()  # the engine's own step records say what each step ran
            t0 = time.perf_counter()
            engine.step()
            this_step["step"] = time.perf_counter() - t0
            steps += 1
            last, records = engine.recorder.since(last)
            if step_rows(records[-1]) == (args.streams, 0):  # a full-batch decode step
                for name, times in phases.items():
                    times.append(this_step.get(name, 0.0))
    print(f"{args.streams} streams, temperature {args.temperature}: median over the {len(phases['step'])} "
          f"full-batch decode steps of {steps}:")
    for name, times in phases.items():
        print(f"  {name:<26} {statistics.median(times) * 1000:7.2f} ms")


if __name__ == "__main__":
    main()
