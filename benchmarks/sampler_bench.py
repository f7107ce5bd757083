"""What sampling costs over greedy, at 1 and 16 rows: the sampler alone, and whole engine steps.

Part 1 (no model, seconds): `lucid.layers.sampler.sample` on (B, 151,936) logits shaped like a chat model's
(a few likely tokens, a long Zipf tail), greedy vs temperature 0.7 and the usual options. Best of --repeat.
Part 2 (--engine, the default model as `lucid serve` loads it): decode throughput of B concurrent sequences, greedy
vs temperature 0.7 (alone, with top-p 0.9, with min-p 0.05), EOS suppressed, runs interleaved so that machine noise
hits all alike. The sampled figure over the greedy one is what a step costs more when it samples (the target: ≤ 5%).

    .venv/bin/python benchmarks/sampler_bench.py                # part 1
    .venv/bin/python benchmarks/sampler_bench.py --engine       # parts 1 and 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

from lucid.layers import sampler as S

VOCAB = 151_936
CASES = {  # name -> per-row (temperature, top_k, top_p, min_p)
    "greedy": (0.0, 0, 1.0, 0.0),
    "T=0.7": (0.7, 0, 1.0, 0.0),
    "T=0.7 top_k=40": (0.7, 40, 1.0, 0.0),
    "T=0.7 top_p=0.9": (0.7, 0, 0.9, 0.0),
    "T=0.7 top_k=20 top_p=0.8": (0.7, 20, 0.8, 0.0),
    "T=0.7 min_p=0.05": (0.7, 0, 1.0, 0.05),
    "T=1.0 seeded": (1.0, 0, 1.0, 0.0),
}


def chat_like_logits(rows: int, seed: int = 0) -> torch.Tensor:
    """(rows, VOCAB): logit = 20 - 2.2·ln(rank) + noise over a random permutation of the vocabulary."""
    g = torch.Generator().manual_seed(seed)
    rank = torch.arange(1, VOCAB + 1, dtype=torch.float32)
    logits = torch.empty(rows, VOCAB)
    for r in range(rows):
        shape = 20 - 2.2 * rank.log() + 0.5 * torch.randn(VOCAB, generator=g)
        logits[r] = shape[torch.randperm(VOCAB, generator=g)]
    return logits


def tensors_for(case: str, rows: int) -> S.SamplingTensors:
    temperature, top_k, top_p, min_p = CASES[case]
    generators = [torch.Generator().manual_seed(i) if "seeded" in case else None for i in range(rows)]
    return S.SamplingTensors(
        temperature=torch.full((rows,), temperature), top_k=torch.full((rows,), top_k, dtype=torch.long),
        top_p=torch.full((rows,), top_p), min_p=torch.full((rows,), min_p), repetition_penalty=torch.ones(rows),
        presence_penalty=torch.zeros(rows), frequency_penalty=torch.zeros(rows), output_counts=None,
        seen_mask=None, bias=None, generators=generators, all_greedy=temperature == 0, num_top_logprobs=-1)


def interleaved_best_ms(calls: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best time of each call over `repeat` rounds, every round running each call once (so that a busy moment of
    the machine hits all of them, not one)."""
    best = {name: float("inf") for name in calls}
    for _ in range(repeat + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: seconds * 1e3 for name, seconds in best.items()}


def sampler_alone(repeat: int) -> None:
    print(f"sampler alone, torch threads {torch.get_num_threads()}, best of {repeat} interleaved rounds (ms a step)")
    for rows in (1, 16):
        logits = chat_like_logits(rows)
        calls = {case: partial(S.sample, logits, tensors_for(case, rows)) for case in CASES}
        ms = interleaved_best_ms(calls, repeat)
        for case, value in ms.items():
            extra = "" if case == "greedy" else f"  (+{value - ms['greedy']:.3f} over greedy)"
            print(f"  {rows:>2} rows  {case:<26} {value:7.3f}{extra}")


ENGINE_CASES = {"greedy": {"temperature": 0.0}, "T=0.7": {"temperature": 0.7},
                "T=0.7 top_p=0.9": {"temperature": 0.7, "top_p": 0.9},
                "T=0.7 min_p=0.05": {"temperature": 0.7, "min_p": 0.05}}


def engine_steps(runs: int, tokens: int) -> None:
    from lucid import SamplingParams
    from lucid.config import DEFAULT_QUANTIZATION
    from lucid.llm import LLM

    llm = LLM(None, quantization=DEFAULT_QUANTIZATION)
    prompt = llm.tokenizer.encode("Write a long story about a lighthouse keeper and the sea.")
    print(f"engine decode, {tokens} tokens per sequence, EOS suppressed, median of {runs} interleaved runs")
    for rows in (1, 16):
        rates: dict[str, list[float]] = {case: [] for case in ENGINE_CASES}
        for run in range(runs):
            for case, options in ENGINE_CASES.items():
                params = SamplingParams(max_tokens=tokens, ignore_eos=True, seed=None, **options)
                prompts = [[*prompt, 100 + run * 32 + i] for i in range(rows)]  # distinct: no shared last token
                started = time.perf_counter()
                llm.generate(prompts, params)
                rates[case].append(rows * tokens / (time.perf_counter() - started))
        greedy = statistics.median(rates["greedy"])
        for case in ENGINE_CASES:
            rate = statistics.median(rates[case])
            print(f"  {rows:>2} sequences  {case:<18} {rate:7.1f} tok/s  / greedy {rate / greedy:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--engine", action="store_true", help="also time engine steps on the default model")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    from lucid.malloc_tuning import keep_large_blocks

    keep_large_blocks()  # as an engine runs (LLMEngine.from_pretrained, lucid serve)
    with torch.inference_mode():
        sampler_alone(args.repeat)
        if args.engine:
            engine_steps(args.runs, args.tokens)


if __name__ == "__main__":
    main()
