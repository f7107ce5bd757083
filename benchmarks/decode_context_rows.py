"""A decode step's time by rows in the batch and context length: the floor under an editor's completion latency.

    .venv/bin/python benchmarks/decode_context_rows.py                      # 1 and 3 rows, 50 and 1,500 tokens
    .venv/bin/python benchmarks/decode_context_rows.py --rows 1 3 --contexts 50 1500 --steps 32

A llama.vscode keystroke asks for 3 completions (`n_cmpl`) of 32 tokens over a ~1,500-token window: whatever the
prompt cache saves, the answer costs 32 decode steps of 3 rows at that context. For each (rows, context), the same
prompt is sent `rows` times (its K/V shared through the prefix cache, as a keystroke's completions share theirs),
once for 1 token and once for `steps` + 1 tokens, greedy and sampled as llama.vscode samples (top_k 40, top_p 0.99);
the difference over `steps` is the time of one decode step. `steps` x that is the least a completion can take here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def step_ms(llm: object, prompt: list[int], rows: int, steps: int, params: object) -> float:
    from dataclasses import replace

    from lucid import SamplingParams

    one = SamplingParams(temperature=0, max_tokens=1)
    llm.generate([prompt] * rows, one)  # type: ignore[attr-defined]  # the prompt into the prefix cache
    t0 = time.perf_counter()
    llm.generate([prompt] * rows, one)  # type: ignore[attr-defined]
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    llm.generate([prompt] * rows, replace(params, max_tokens=steps + 1))  # type: ignore[attr-defined]
    return (time.perf_counter() - t0 - first) / steps * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--contexts", type=int, nargs="+", default=[50, 1500])
    parser.add_argument("--steps", type=int, default=32)
    args = parser.parse_args()

    from lucid import LLM, SamplingParams
    from lucid.config import DEFAULT_QUANTIZATION

    llm = LLM(None, quantization=DEFAULT_QUANTIZATION)
    text = (Path(__file__).resolve().parents[1] / "lucid" / "engine" / "scheduler.py").read_text()
    ids = llm.tokenizer.encode_prompt(text * 4)
    samplers = {"greedy": SamplingParams(temperature=0, ignore_eos=True),
                "top_k 40, top_p 0.99": SamplingParams(temperature=0.8, top_k=40, top_p=0.99, ignore_eos=True)}
    print("| context | rows | sampling | decode step (ms) | x steps (ms) |")
    print("|---|---|---|---|---|")
    for context in args.contexts:
        if context > len(ids):
            raise SystemExit(f"the sample text has only {len(ids)} tokens")
        for rows in args.rows:
            for name, params in samplers.items():
                ms = step_ms(llm, ids[:context], rows, args.steps, params)
                print(f"| {context} | {rows} | {name} | {ms:.1f} | {ms * args.steps:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
