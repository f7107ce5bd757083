"""Where one engine step goes at a given batch: the fused layers, the lm_head, the sampler, the whole step.

    .venv/bin/python benchmarks/step_phases.py --streams 16 --temperature 0.7
    .venv/bin/python benchmarks/step_phases.py --streams 1

In-process, the default weights: `streams` distinct 128-token prompts are added at once and decoded together for
`--tokens` steps (EOS ignored), twice (the first pass warms the caches); each phase is timed around the call that makes
it (ModelRunner._fused_forward, the model's compute_logits, the sampler) and its median over the second pass's decode
steps is printed. Docs/BENCHMARKS.md "Session 8" has figures; pair runs in turns to compare two builds on a noisy box.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        t0 = time.perf_counter()
        result = fn(*args)
        into.append(time.perf_counter() - t0)
        return result
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--tokens", type=int, default=64, help="decode steps a pass (64)")
    args = parser.parse_args()

    import lucid.engine.model_runner as model_runner
    from lucid import LLM, SamplingParams
    from lucid.config import DEFAULT_QUANTIZATION

    engine = LLM(quantization=DEFAULT_QUANTIZATION).engine
    runner = engine.runner
    phases: dict[str, list[float]] = {"fused layers": [], "lm_head (compute_logits)": [], "sampler": [], "step": []}
    runner._fused_forward = timed(runner._fused_forward, phases["fused layers"])
    runner.model.compute_logits = timed(runner.model.compute_logits, phases["lm_head (compute_logits)"])
    model_runner.sample = timed(model_runner.sample, phases["sampler"])
    params = SamplingParams(temperature=args.temperature, max_tokens=args.tokens, ignore_eos=True)
    for rep in range(2):
        for times in phases.values():
            times.clear()
        for n in range(args.streams):  # distinct prompts: no prefix-cache hits
            engine.add_request(f"p{rep}-{n}", [(1000 + rep * 977 + n * 131 + i * 17) % 30000 + 200 for i in range(128)],
                               params)
        while engine.has_unfinished():
            t0 = time.perf_counter()
            engine.step()
            phases["step"].append(time.perf_counter() - t0)
    print(f"{args.streams} streams, temperature {args.temperature}, median over {args.tokens} decode steps:")
    for name, times in phases.items():
        decode = times[-(args.tokens - 1):]  # the decode steps (the first step of a pass is the prompts' prefill)
        print(f"  {name:<26} {statistics.median(decode) * 1000:7.2f} ms")


if __name__ == "__main__":
    main()
