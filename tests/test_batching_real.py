"""16 concurrent greedy requests on the real model (fp32) give the answers they give one at a time.

Batch shape changes the order of floating-point sums, so a near-tie (< 0.05 logit) may flip; where two
answers differ, the test checks that the first differing token was such a near-tie in the lone run.
"""

import pytest

from lucid import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

QUESTIONS = [
    "What is a closure in Python?", "Name three sorting algorithms.", "用一句话解释什么是递归。",
    "What does `git rebase` do?", "Write a one-line Python list comprehension for squares.",
    "What is the difference between TCP and UDP?", "Explain big-O notation briefly.", "什么是哈希表？",
    "How do I reverse a list in Python?", "What is a segmentation fault?", "Give an example of a SQL JOIN.",
    "What is an API?", "Explain what a Docker container is.", "What is 12 squared?",
    "What is a unit test?", "写一个 Hello World 的 C 程序。",
]
NEAR_TIE = 0.05


def test_16_concurrent_equal_one_at_a_time(real_llm_fp32):
    llm = real_llm_fp32
    params = SamplingParams(temperature=0, max_tokens=16, logprobs=2)
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    together = [o.outputs[0] for o in llm.chat(conversations, params)]
    assert llm.engine.stats().num_used_blocks == 0
    for conversation, batched in zip(conversations, together):
        alone = llm.chat([conversation], params)[0].outputs[0]
        if alone.token_ids == batched.token_ids:
            continue
        step = next(i for i, (a, b) in enumerate(zip(alone.token_ids, batched.token_ids)) if a != b)
        lone_step = alone.logprobs[step]
        alternatives = {t.token_id: t.logprob for t in lone_step.top}
        other = batched.token_ids[step]
        assert other in alternatives, f"{conversation[0]['content']!r}: batch chose a non-top-2 token at {step}"
        gap = lone_step.logprob - alternatives[other]
        assert gap < NEAR_TIE, f"{conversation[0]['content']!r}: step {step} differs by {gap:.4f} (not a near-tie)"
