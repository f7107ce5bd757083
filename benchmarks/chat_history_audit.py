"""Does a chat's next turn start with exactly the tokens its previous turn computed? (in process, no server)

    .venv/bin/python benchmarks/chat_history_audit.py [--conversations 8] [--turns 5] [--max-tokens 48]

Runs cluster_bench's multi-turn workload (lucid/bench/multi_turn.py) on one engine, each turn's conversations as one
batch, greedy. For every follow-up it compares the new prompt's tokens (the history re-rendered by the chat template
and re-tokenized) with the previous turn's prompt + generated token ids, and prints the common prefix, the cached
tokens and how the previous answer ended (a `length` answer has no generated <|im_end|>: the template appends one).
"""

from __future__ import annotations

import argparse

from lucid.bench.multi_turn import SYSTEM_PROMPT, TOPICS
from lucid.llm import LLM
from lucid.sampling_params import SamplingParams


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    llm = LLM(args.model)
    params = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    conversations = [[{"role": "system", "content": SYSTEM_PROMPT},
                      {"role": "user", "content": f"I am user {i}. Tell me about {TOPICS[i % len(TOPICS)]}: what "
                                                  f"should I know first?"}] for i in range(args.conversations)]
    computed: list[list[int] | None] = [None] * args.conversations
    prompt_total = cached_total = mismatches = 0
    for turn in range(args.turns):
        for i, out in enumerate(llm.chat(conversations, params)):
            prompt, answer = out.prompt_token_ids, out.outputs[0]
            prompt_total, cached_total = prompt_total + len(prompt), cached_total + out.num_cached_tokens
            line = f"turn {turn} conversation {i}: prompt {len(prompt)}, cached {out.num_cached_tokens}"
            if computed[i] is not None:
                shared = common_prefix(computed[i], prompt)
                mismatches += shared < len(computed[i])
                line += f", previous prompt + answer {len(computed[i])} tokens, {shared} of them start this prompt"
            print(f"{line}; answer: {len(answer.token_ids)} tokens, finish {answer.finish_reason}", flush=True)
            computed[i] = list(prompt) + list(answer.token_ids)
            topic = TOPICS[i % len(TOPICS)]
            conversations[i] += [{"role": "assistant", "content": answer.text},
                                 {"role": "user", "content": f"Thanks. Follow-up {turn + 1} about {topic}: and what "
                                                             f"comes next, in more detail, with an example?"}]
    print(f"hit rate {cached_total / prompt_total:.3f} ({cached_total} / {prompt_total} prompt tokens); follow-ups "
          f"whose prompt did not start with the previous prompt + answer: {mismatches}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
