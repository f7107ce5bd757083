"""What does `--cache-reuse` (K/V copied to shifted positions, engine/kv_reuse.py) cost in completion quality?

    .venv/bin/python benchmarks/fim_reuse_quality.py                 # 30 cases, lucid's default weights
    .venv/bin/python benchmarks/fim_reuse_quality.py --cases 60 --json out.json

The cases are fim_quality.py's (a line of lucid's own code, the cursor inside it, the rest of the line gone), with
llama.vscode's window (256 lines before, 64 after: the suffix is well over 256 tokens). Each case is completed twice,
greedily to the end of the line, in llama.cpp's FIM order:
- exact: every prompt token computed (or taken from the exact prefix cache);
- reused: as in an editor's typing session, first the keystroke before (the typed line one to three characters
  shorter), then the case itself with `cache_reuse=256`, whose suffix K/V is copied from the keystroke before and
  rotated to its new positions (an approximation: it was computed after a different typed line).
Scored against the real rest of the line (exact match, first 8 characters), plus how many completions are identical.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from fim_quality import print_scores, sample_cases, score

REUSE = 256   # lucid serve's default --cache-reuse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantization", "-q", default="mixed", help="lucid serve's default on CPU")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--recompute-after-edit", type=int, default=None,
                        help="override kv_reuse.RECOMPUTE_AFTER_EDIT (tokens computed again after an edit)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from lucid import LLM, SamplingParams
    from lucid.engine import kv_reuse
    from lucid.server.fim import FimTokens, render_infill

    llm = LLM(quantization=args.quantization, num_threads=args.threads, max_model_len=8192,
              max_prefill_tokens_while_decoding=0)
    if args.recompute_after_edit is not None:
        kv_reuse.RECOMPUTE_AFTER_EDIT = args.recompute_after_edit
    tokens = FimTokens.find(llm.tokenizer)
    assert tokens is not None, "the model has no FIM tokens"
    rng = random.Random(args.seed)

    def prompt(prefix: str, typed: str, suffix: str) -> list[int]:
        return render_infill(llm.tokenizer, tokens, prefix, suffix, typed, n_ctx=8192, n_predict=32).token_ids

    def complete(ids: list[int], reuse: int) -> str:
        params = SamplingParams(temperature=0, max_tokens=48, stop=["\n"], stop_token_ids=tokens.ids,
                                cache_reuse=reuse)
        return llm.generate([ids], params)[0].outputs[0].text

    cases = [c for c in sample_cases(args.cases * 3, args.seed, 256, 64) if len(c.prompt.strip()) >= 2]
    totals = {"exact": [0, 0], "reused": [0, 0]}
    rows, same, reused_tokens = [], 0, 0
    for case in cases[:args.cases]:
        ids = prompt(case.prefix, case.prompt, case.suffix)
        before = case.prompt[:-rng.randint(1, min(3, len(case.prompt.strip()) - 1))]
        complete(prompt(case.prefix, before, case.suffix), REUSE)              # the keystroke before: the source
        counted = llm.engine.stats().num_reused_tokens
        reused = complete(ids, REUSE)
        reused_tokens += llm.engine.stats().num_reused_tokens - counted
        # After, not before: the exact prefix cache never holds K/V computed after a copied run, so this computes
        # everything from the typed line on (a first run of `ids` would instead leave it all in the prefix cache).
        exact = complete(ids, 0)
        row = {"where": case.where, "prompt": case.prompt, "expected": case.expected, "exact": exact,
               "reused": reused, "prompt_tokens": len(ids)}
        for name, text in (("exact", exact), ("reused", reused)):
            hit, head = score(text, case.expected)
            totals[name][0] += hit
            totals[name][1] += head
        same += exact.split("\n")[0] == reused.split("\n")[0]
        rows.append(row)
    n = len(rows)
    print(f"{n} cases from lucid/*.py (seed {args.seed}, 256 lines before, 64 after), greedy, -q {args.quantization}, "
          f"RECOMPUTE_AFTER_EDIT {kv_reuse.RECOMPUTE_AFTER_EDIT};"
          f" {reused_tokens} prompt tokens reused in the second completions ({reused_tokens / max(n, 1):.0f} a case)")
    print_scores("suffix K/V", totals, n, same)
    if args.json:
        args.json.write_text(json.dumps({"totals": totals, "identical": same, "cases": rows}, indent=2))


if __name__ == "__main__":
    main()
