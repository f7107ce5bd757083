"""Would starting the FIM middle with the typed line cost quality? Both layouts on cases from this repo's code.

    .venv/bin/python benchmarks/fim_quality.py                   # 60 cases, lucid's default weights (-q mixed)
    .venv/bin/python benchmarks/fim_quality.py --cases 100 --json out.json

Each case is a line of a Python file of lucid/ with the cursor inside it, as an editor sees it while the line is
being typed: the lines before it are the prefix, the line's start (at least one non-blank character) is llama.vscode's
`prompt`, the rest of the line is gone (not typed yet) and the lines after it are the suffix. Two prompts per case:

    llama.cpp's order (lucid's /infill):  <|fim_prefix|>{prefix}{prompt}<|fim_suffix|>{suffix}<|fim_middle|>
    line-in-middle order (candidate):     <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{prompt}

The second would let a prefix cache keep the suffix while a line is typed; it is adopted only if not worse.

Greedy completion to the end of the line; scored against the real rest of the line: exact match (trailing blanks
ignored) and whether the first 8 characters (or the whole rest, if shorter) match.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Case:
    where: str
    prefix: str
    prompt: str
    suffix: str
    expected: str


def sample_cases(count: int, seed: int, prefix_lines: int, suffix_lines: int) -> list[Case]:
    """Lines with at least 8 non-blank characters, cursor after 1 or more of them and before the last 2."""
    rng = random.Random(seed)
    files = sorted(p for p in (REPO / "lucid").rglob("*.py") if p.stat().st_size > 2000)
    cases: list[Case] = []
    while len(cases) < count:
        path = rng.choice(files)
        lines = path.read_text().split("\n")
        i = rng.randrange(len(lines))
        line = lines[i].rstrip()
        indent = len(line) - len(line.lstrip())
        if len(line) - indent < 8 or i < 5:
            continue
        cursor = rng.randrange(indent + 1, len(line) - 1)
        prefix = "".join(f"{text}\n" for text in lines[max(0, i - prefix_lines):i])
        suffix = "\n" + "".join(f"{text}\n" for text in lines[i + 1:i + 1 + suffix_lines])
        cases.append(Case(f"{path.relative_to(REPO)}:{i + 1}", prefix, line[:cursor], suffix, line[cursor:]))
    return cases


def both_layouts(tokenizer, tokens, case: Case) -> tuple[list[int], list[int]]:
    from lucid.server.fim import render_infill

    llama_order = render_infill(tokenizer, tokens, case.prefix, case.suffix, case.prompt, n_ctx=8192,
                                n_predict=32).token_ids
    # the other order: the same tokens with the typed line moved from before <|fim_suffix|> to after <|fim_middle|>
    prompt_ids = tokenizer.encode_text(case.prompt)
    at = llama_order.index(tokens.suffix)
    return llama_order, llama_order[:at - len(prompt_ids)] + llama_order[at:] + prompt_ids


def score(completion: str, expected: str) -> tuple[bool, bool]:
    line = completion.split("\n", 1)[0].rstrip()
    head = min(8, len(expected))
    return line == expected.rstrip(), line[:head] == expected[:head]


def print_scores(column: str, totals: dict[str, list[int]], n: int, same: int) -> None:
    """The markdown table of exact / first-8-characters counts per variant, then how many completions agree."""
    print(f"| {column} | rest of line exact | first 8 characters |")
    print("|---|---|---|")
    for name, (exact, head) in totals.items():
        print(f"| {name} | {exact}/{n} | {head}/{n} |")
    print(f"identical completions: {same}/{n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prefix-lines", type=int, default=60)
    parser.add_argument("--suffix-lines", type=int, default=20)
    parser.add_argument("--quantization", "-q", default="mixed", help="lucid serve's default on CPU")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from lucid import LLM, SamplingParams
    from lucid.server.fim import FimTokens

    # No cap on prompt tokens per step while others decode: this is a batch job, not a server keeping streams smooth.
    llm = LLM(quantization=args.quantization, num_threads=args.threads, max_model_len=4096,
              max_prefill_tokens_while_decoding=0)
    tokens = FimTokens.find(llm.tokenizer)
    assert tokens is not None, "the model has no FIM tokens"
    cases = sample_cases(args.cases, args.seed, args.prefix_lines, args.suffix_lines)
    prompts = [ids for case in cases for ids in both_layouts(llm.tokenizer, tokens, case)]
    params = SamplingParams(temperature=0, max_tokens=48, stop=["\n"], stop_token_ids=tokens.ids)
    texts = [out.outputs[0].text for out in llm.generate(prompts, params)]

    totals = {"llama.cpp order": [0, 0], "line-in-middle order": [0, 0]}
    rows = []
    for k, case in enumerate(cases):
        row = {"where": case.where, "prompt": case.prompt, "expected": case.expected}
        for j, name in enumerate(totals):
            exact, head = score(texts[2 * k + j], case.expected)
            totals[name][0] += exact
            totals[name][1] += head
            row[name] = texts[2 * k + j]
        rows.append(row)
    same = sum(r["llama.cpp order"].split("\n")[0] == r["line-in-middle order"].split("\n")[0] for r in rows)
    print(f"{len(cases)} cases from lucid/*.py (seed {args.seed}, {args.prefix_lines} lines before, "
          f"{args.suffix_lines} after), greedy, -q {args.quantization}")
    print_scores("layout", totals, len(cases), same)
    if args.json:
        args.json.write_text(json.dumps({"totals": totals, "cases": rows}, indent=2))


if __name__ == "__main__":
    main()
