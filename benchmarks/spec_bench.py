"""N-gram speculative decoding on vs off, side by side in one process on the default model.

Three workloads, each run with speculation off and on alternately (one engine; its speculator switched per run,
so both see the same machine state):
- code edit: functions (and small classes) of 40-80 lines from the repo's own code, each asked back with one small
  change (a rename), single stream, greedy. The answer mostly copies the prompt: what n-gram drafts are for.
- chat: open-ended questions, single stream, greedy.
- concurrent: the chat questions as 16 streams at once.
Reports output tokens per second (generated tokens / wall time of the generation, prefill included) and, for the
code-edit run, that greedy outputs are identical on and off.

    .venv/bin/python benchmarks/spec_bench.py                       # 20 code-edit tasks, 8 chat, 16 streams
    .venv/bin/python benchmarks/spec_bench.py --tasks 4 --chat 2 --max-tokens 200 --streams 0   # a quick look
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

from lucid import SamplingParams
from lucid.engine.speculative import SpeculativeConfig, Speculator
from lucid.llm import LLM

ROOT = Path(__file__).resolve().parent.parent

CHAT = [
    "Explain how a hash map works, with its average and worst-case costs.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are the main differences between TCP and UDP? When would you pick each?",
    "Give me five ideas for a weekend project to learn Rust.",
    "Why is the sky blue? Explain it to a ten-year-old.",
    "Compare Python's asyncio with threads for an I/O-bound web scraper.",
    "Summarise the causes of the French Revolution in a few paragraphs.",
    "How do I choose between PostgreSQL and SQLite for a small web app?",
    "Describe three sorting algorithms and when each is a good choice.",
    "What should a beginner know before running their first marathon?",
    "Explain gradient descent and the role of the learning rate.",
    "Write a limerick about a cat who learned to program.",
    "What is the difference between a process and a thread?",
    "Plan a three-day trip to Kyoto for someone who loves gardens.",
    "How does public-key cryptography let two strangers share a secret?",
    "List some good habits for writing readable code, with an example of each.",
]


def code_edit_tasks(count: int) -> list[tuple[str, str]]:
    """(function name, prompt) for `count` functions of 40-80 lines from the repo's own code, in a fixed order."""
    tasks = []
    paths = sorted(p for folder in ("lucid", "benchmarks", "tests", "examples") for p in (ROOT / folder).rglob("*.py"))
    for path in paths:
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            is_unit = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if is_unit and 40 <= node.end_lineno - node.lineno + 1 <= 80:
                start = node.lineno - 1 - len(node.decorator_list)
                text = "\n".join(lines[start:node.end_lineno])
                indent = len(text) - len(text.lstrip())
                text = "\n".join(line[indent:] for line in text.splitlines())
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                prompt = (f"Here is a Python {kind}:\n\n```python\n{text}\n```\n\nRewrite it with one change: rename "
                          f"the {kind} from `{node.name}` to `{node.name}_v2`. Keep everything else exactly as it "
                          f"is. Reply with the complete {kind} in one code block and nothing else.")
                tasks.append((f"{path.relative_to(ROOT)}:{node.name}", prompt))
    return tasks[:count]


def generate(llm: LLM, prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], float]:
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    started = time.perf_counter()
    outs = llm.generate(prompts, params)
    return [o.outputs[0].token_ids for o in outs], time.perf_counter() - started


def side_by_side(llm: LLM, speculator: Speculator, prompts: list[list[int]], max_tokens: int,
                 streams: int) -> dict:
    """Each batch of `streams` prompts off then on; totals of tokens and seconds for each."""
    totals = {"off": [0, 0.0], "on": [0, 0.0]}
    identical = True
    for i in range(0, len(prompts), streams):
        batch = prompts[i:i + streams]
        results = {}
        for mode in ("off", "on") if (i // streams) % 2 == 0 else ("on", "off"):   # alternate who goes first
            llm.engine.scheduler.speculator = speculator if mode == "on" else None
            tokens, seconds = generate(llm, batch, max_tokens)
            totals[mode][0] += sum(len(t) for t in tokens)
            totals[mode][1] += seconds
            results[mode] = tokens
        identical &= results["off"] == results["on"]
    off, on = (totals[m][0] / totals[m][1] for m in ("off", "on"))
    return {"off_tok_s": round(off, 2), "on_tok_s": round(on, 2), "speedup": round(on / off, 3),
            "tokens_off": totals["off"][0], "tokens_on": totals["on"][0], "identical_greedy": identical}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20, help="code-edit tasks")
    parser.add_argument("--chat", type=int, default=8, help="single-stream chat prompts")
    parser.add_argument("--streams", type=int, default=16, help="concurrent chat streams (0: skip)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--chat-max-tokens", type=int, default=256)
    parser.add_argument("--speculative", default="ngram", help="as lucid serve --speculative")
    parser.add_argument("--speculative-config", default=None, help="as lucid serve --speculative-config")
    args = parser.parse_args()

    spec = SpeculativeConfig.parse(args.speculative, args.speculative_config)
    # No prefix cache: the second run of a prompt would skip its prefill and look faster.
    llm = LLM(None, dtype="bfloat16", quantization="mixed", speculative=spec, enable_prefix_caching=False)
    speculator = llm.engine.speculator
    encode = llm.encode_chat
    report = {"config": spec.__dict__}
    tasks = code_edit_tasks(args.tasks)
    report["code_edit"] = side_by_side(
        llm, speculator, [encode([{"role": "user", "content": p}]) for _, p in tasks], args.max_tokens, 1)
    report["code_edit"]["tasks"] = len(tasks)
    print(json.dumps(report, indent=1), flush=True)
    chat = [encode([{"role": "user", "content": q}]) for q in CHAT]
    if args.chat:
        report["chat"] = side_by_side(llm, speculator, chat[:args.chat], args.chat_max_tokens, 1)
        print(json.dumps(report["chat"]), flush=True)
    if args.streams:
        report[f"concurrent_{args.streams}"] = side_by_side(
            llm, speculator, (chat * -(-args.streams // len(chat)))[:args.streams], args.chat_max_tokens, args.streams)
    llm.engine.scheduler.speculator = speculator
    report["drafted"], report["accepted"] = speculator.num_drafted, speculator.num_accepted
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
