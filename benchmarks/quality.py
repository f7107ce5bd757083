"""Quality of each weight format: perplexity on a fixed text shipped in the repo, and greedy agreement with bf16.

    .venv/bin/python benchmarks/quality.py                      # none (bf16), int8, int4, mixed
    .venv/bin/python benchmarks/quality.py --schemes none mixed

Perplexity = exp(mean negative log-likelihood of each token given the ones before), one forward over the
whole text. Agreement: for 20 chat prompts, the fraction of greedy tokens (32 each) equal to bf16's, compared
up to the first divergence, and the fraction of prompts whose whole greedy answer is identical.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

TEXT = Path(__file__).parent / "data" / "perplexity.txt"
PROMPTS = [
    "What is the capital of France?", "Write a haiku about the sea.", "Explain recursion to a child.",
    "Write a Python function to reverse a string.", "What is 17 times 23?", "用一句话介绍一下北京。",
    "List three uses of a hash map.", "What does HTTP stand for?", "Translate 'good morning' into French.",
    "Write a SQL query that counts rows in a table named users.", "Why is the sky blue?",
    "Give me a name for a pet turtle.", "What is the difference between a list and a tuple in Python?",
    "Summarize the plot of Romeo and Juliet in one sentence.", "写一个计算阶乘的 Python 函数。",
    "What is a binary search?", "How many legs does a spider have?", "Write a bash command to count lines in a file.",
    "What is the boiling point of water at sea level?", "Explain what a mutex is.",
]


def perplexity(llm, text: str) -> float:
    ids = llm.tokenizer.encode(text)
    with torch.inference_mode():
        logits = llm.model(torch.tensor([ids]))[0]                          # (T, V) float32
    nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]))
    return math.exp(float(nll))


def greedy_answers(llm) -> list[list[int]]:
    from lucid import SamplingParams

    outs = llm.chat([[{"role": "user", "content": p}] for p in PROMPTS], SamplingParams(temperature=0, max_tokens=32))
    return [o.outputs[0].token_ids for o in outs]


def agreement(reference: list[list[int]], other: list[list[int]]) -> tuple[float, float]:
    matched = total = identical = 0
    for a, b in zip(reference, other):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        matched += n
        total += len(a)
        identical += a == b
    return matched / total, identical / len(reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemes", nargs="*", default=["none", "int8", "int4", "mixed"])
    args = parser.parse_args()
    from lucid.llm import LLM

    text = TEXT.read_text()
    reference = None
    print("| weights | perplexity | greedy tokens equal to bf16 (to first divergence) | identical answers |")
    print("|---|---|---|---|")
    for scheme in args.schemes:
        llm = LLM(None, dtype="bfloat16", quantization=scheme)
        ppl = perplexity(llm, text)
        answers = greedy_answers(llm)
        if reference is None:
            reference = answers
        tokens, whole = agreement(reference, answers)
        print(f"| {scheme} | {ppl:.3f} | {tokens:.1%} | {whole:.0%} |", flush=True)
        del llm


if __name__ == "__main__":
    main()
