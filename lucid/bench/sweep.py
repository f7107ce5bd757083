"""The same benchmark at several loads, one after another, against one server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from lucid.bench.runner import benchmark
from lucid.bench.stats import BenchSummary


def prompts_for(concurrency: int, rounds: int, minimum: int = 4) -> int:
    """Enough requests that each of `concurrency` slots serves `rounds` of them (so the batch stays full)."""
    return max(minimum, rounds * concurrency)


def concurrency_sweep(url: str, levels: Sequence[int], *, rounds: int = 2, input_len: int = 128,
                      output_len: int = 128, model: str | None = None, endpoint: str = "completions",
                      extra_body: dict[str, Any] | None = None, api_key: str | None = None,
                      progress: bool = True, seed: int = 0) -> dict[int, BenchSummary]:
    """{concurrency: summary} for each level, in order; each level gets its own prompts (no cache reuse). A second
    sweep on the same server needs another `seed`, or its prompts are the first sweep's, already cached."""
    summaries = {}
    for level in levels:
        result = asyncio.run(benchmark(url, model, num_prompts=prompts_for(level, rounds), input_len=input_len,
                                       output_len=output_len, concurrency=level, endpoint=endpoint, api_key=api_key,
                                       extra_body=extra_body, seed=seed + level, progress=progress))
        summaries[level] = result.summary
    return summaries


def paired_sweep(url: str, levels: Sequence[int], variants: dict[str, dict[str, Any] | None], *, rounds: int = 2,
                 input_len: int = 128, output_len: int = 128, progress: bool = True,
                 seed: int = 0) -> dict[str, dict[int, BenchSummary]]:
    """{variant: {concurrency: summary}}: at each level, each variant (a name and its extra request body, e.g.
    greedy and sampled) in turn. A ratio between variants then compares runs seconds apart, not minutes: on a shared
    machine the speed drifts more between two sweeps than between two neighbouring levels. Each variant gets its own
    prompts (seeds `seed`, `seed` + 1000, ...), so none comes from the prompt cache of another."""
    summaries: dict[str, dict[int, BenchSummary]] = {name: {} for name in variants}
    for level in levels:
        for offset, (name, body) in enumerate(variants.items()):
            summaries[name][level] = concurrency_sweep(url, [level], rounds=rounds, input_len=input_len,
                                                       output_len=output_len, extra_body=body, progress=progress,
                                                       seed=seed + 1000 * offset)[level]
    return summaries
