"""The engine end to end on a tiny random model: paged KV vs full recompute, batching, preemption, prefix cache."""

import torch
from engine_fixtures import TINY, run_all, tiny_engine, tiny_model

from lucid import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
PROMPTS = [[1, 2, 3, 4, 5], [7, 8, 9], list(range(10, 40)), [42], list(range(50, 67))]


def full_recompute_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """The walk-through's loop: feed the whole sequence every step, take the argmax of the last position."""
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_cached_logits_equal_full_recompute():
    """Chunked prefill + paged decode give the same last-position logits as a cache-free forward (fp32)."""
    model = tiny_model()
    engine = tiny_engine(model, max_num_batched_tokens=7)   # forces the 30-token prompt into chunks
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=5)
    outputs = []
    engine.add_request("a", PROMPTS[2], params)
    while engine.has_unfinished():
        outputs += engine.step()
    out = outputs[-1].outputs[0]
    with torch.inference_mode():
        full = model(torch.tensor([PROMPTS[2] + out.token_ids]))[0].log_softmax(-1)   # (T, V)
    n = len(PROMPTS[2])
    # Every reported logprob (the raw distribution) equals the full forward's at the same position.
    logprobs = [lp for o in outputs for lp in o.outputs[0].delta_logprobs or []]
    assert len(logprobs) == 6
    for step, lp in enumerate(logprobs):
        expected = full[n - 1 + step]
        assert abs(lp.logprob - float(expected[lp.token_id])) < 1e-4
        for alt in lp.top:
            assert abs(alt.logprob - float(expected[alt.token_id])) < 1e-4
    assert out.token_ids == full_recompute_greedy(model, PROMPTS[2], 6)


def test_batched_greedy_equals_one_at_a_time():
    model = tiny_model()
    alone = [run_all(tiny_engine(model), [p], GREEDY)[0].outputs[0].token_ids for p in PROMPTS]
    together = [o.outputs[0].token_ids for o in run_all(tiny_engine(model), PROMPTS, GREEDY)]
    assert together == alone
    assert alone[0] == full_recompute_greedy(model, PROMPTS[0], 12)


def test_preemption_keeps_outputs_and_frees_blocks():
    model = tiny_model()
    expected = [o.outputs[0].token_ids for o in run_all(tiny_engine(model), PROMPTS, GREEDY)]
    # 12 blocks of 4 tokens: the five sequences (up to 42 tokens each) cannot all fit at once.
    per_block = 2 * TINY.num_hidden_layers * TINY.num_key_value_heads * TINY.head_dim * 4 * 4
    engine = tiny_engine(model, kv_cache_memory=12 * per_block, enable_prefix_caching=False)
    assert engine.blocks.num_blocks == 12
    got = [o.outputs[0].token_ids for o in run_all(engine, PROMPTS, GREEDY)]
    assert engine.scheduler.num_preemptions > 0
    assert got == expected
    assert engine.blocks.num_used_blocks == 0


def test_prefix_cache_reuses_blocks_and_keeps_output():
    model = tiny_model()
    engine = tiny_engine(model)
    history = list(range(1, 30))
    first = run_all(engine, [history], GREEDY)[0]
    assert first.num_cached_tokens == 0
    follow_up = history + first.outputs[0].token_ids + [5, 6, 7]
    cold = run_all(tiny_engine(model), [follow_up], GREEDY)[0]
    warm = run_all(engine, [follow_up], GREEDY)[0]
    assert warm.num_cached_tokens >= 36          # 40 shared tokens, whole blocks of 4, last token recomputed
    assert warm.outputs[0].token_ids == cold.outputs[0].token_ids


def test_abort_frees_blocks_at_once():
    engine = tiny_engine()
    engine.add_request("x", list(range(1, 20)), SamplingParams(temperature=0, max_tokens=100, ignore_eos=True))
    engine.step()
    assert engine.blocks.num_used_blocks > 0
    out = engine.abort("x")
    assert out is not None and out.outputs[0].finish_reason == "abort"
    assert engine.blocks.num_used_blocks == 0 and not engine.has_unfinished()


def test_seeded_request_is_independent_of_batch():
    model = tiny_model()
    seeded = SamplingParams(temperature=1.0, seed=1234, max_tokens=10, ignore_eos=True)
    other = SamplingParams(temperature=1.0, max_tokens=10, ignore_eos=True)
    alone = run_all(tiny_engine(model), [[3, 4, 5]], seeded)[0].outputs[0].token_ids
    engine = tiny_engine(model)
    engine.add_request("noise1", [9, 9, 9, 9], other)
    engine.add_request("seeded", [3, 4, 5], seeded)
    engine.add_request("noise2", [1], other)
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            done[out.request_id] = out
    assert done["seeded"].outputs[0].token_ids == alone


def test_stop_string_and_token_and_min_tokens():
    model = tiny_model()
    base = run_all(tiny_engine(model), [[1, 2, 3]], GREEDY)[0].outputs[0]
    third = base.token_ids[2]
    # Stop string: the text of the third token; output ends before it.
    stop = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=[f"[{third}]"])
    out = run_all(tiny_engine(model), [[1, 2, 3]], stop)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == f"[{third}]"
    assert f"[{third}]" not in out.text and base.text.startswith(out.text)
    # Stop token id: ends at its first occurrence, with stop_reason = the id.
    by_id = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop_token_ids=[third])
    out = run_all(tiny_engine(model), [[1, 2, 3]], by_id)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == third
    assert out.token_ids == base.token_ids[:base.token_ids.index(third) + 1]
    # min_tokens bans the stop id until enough tokens exist.
    late = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop_token_ids=[third], min_tokens=8)
    out = run_all(tiny_engine(model), [[1, 2, 3]], late)[0].outputs[0]
    assert len(out.token_ids) >= 8 and third not in out.token_ids[:7]


def test_n_completions_and_length():
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=5, ignore_eos=True)
    out = run_all(tiny_engine(), [[1, 2, 3]], params)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(len(c.token_ids) == 5 and c.finish_reason == "length" for c in out.outputs)
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1


def test_abort_completion_drops_one_row_and_the_others_go_on():
    """An editor's n_indent cuts one of n completions: its row leaves the batch at once, the others finish."""
    engine = tiny_engine()
    engine.add_request("r", [3, 4, 5, 6, 7], SamplingParams(n=3, temperature=0.8, seed=1, max_tokens=12,
                                                            ignore_eos=True))
    for _ in range(3):
        engine.step()
    out = engine.abort_completion("r", 1)
    assert out is not None and not out.finished and out.outputs[1].finish_reason == "abort"
    assert len(engine.scheduler.running) == 2
    while engine.has_unfinished():
        assert len(engine.scheduler.running) <= 2
        outputs = engine.step()
    final = outputs[-1]
    assert final.finished and [len(c.token_ids) for c in final.outputs][::2] == [12, 12]
    assert len(final.outputs[1].token_ids) < 12 and engine.blocks.num_used_blocks == 0
    assert engine.abort_completion("r", 0) is None                       # gone: nothing to stop
