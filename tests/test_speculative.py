"""N-gram speculative decoding: drafts, bookkeeping, exactness (greedy bitwise, sampled in distribution)."""

from __future__ import annotations

import pytest
import torch

from lucid import kernels
from lucid.config import EngineConfig
from lucid.engine.block_manager import BlockManager
from lucid.engine.scheduler import Scheduler
from lucid.engine.sequence import Sequence
from lucid.engine.speculative import SpeculativeConfig, Speculator, best_draft_length, find_draft
from lucid.fusion import fuse_projections
from lucid.quantize import quantize_model
from lucid.sampling_params import SamplingParams
from tests.engine_fixtures import run_all, tiny_engine, tiny_model

needs_kernels = pytest.mark.skipif(not kernels.available(), reason=f"lucid kernels: {kernels.unavailable_reason()}")

# Prompts that repeat themselves, so the tail n-gram is found earlier and drafts are proposed.
PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3], [9, 8, 7, 9, 8, 7, 9, 8], [5] * 21,
           [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3], [10, 11, 12, 13, 10, 11, 12, 13, 10, 11]]
# Rows at no cost: every match is drafted in full, so these tests exercise the verify rows whatever the acceptance.
FREE_ROWS = dict(row_cost=0.0, verify_cost=0.0)
SPEC = SpeculativeConfig(num_speculative_tokens=5, max_batch_size=64, **FREE_ROWS)


# ---- drafts and flags ----------------------------------------------------------------------------------------
def test_find_draft_takes_the_latest_longest_match():
    tokens = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 1, 2, 3]
    assert find_draft(tokens, 3, 2, 4) == [7, 8, 5]          # the later of two matches of (1, 2, 3)
    assert find_draft(tokens, 1, 2, 4) == [7]
    assert find_draft([4, 5, 6, 7], 3, 2, 4) == []           # no earlier occurrence: no draft
    assert find_draft([5, 5, 5, 5], 3, 2, 2) == [5, 5, 5]    # a match running into the tail repeats its period
    assert find_draft([1, 2, 1, 2, 1], 4, 1, 1) == [2, 1, 2, 1]
    assert find_draft([1], 3, 1, 4) == []


def test_speculative_flags_parse_and_refuse_bad_values():
    assert SpeculativeConfig.parse(None, None) is None
    assert SpeculativeConfig.parse("ngram").num_speculative_tokens == 8
    cfg = SpeculativeConfig.parse("ngram:5", '{"prompt_lookup_min": 3, "prompt_lookup_max": 5}')
    assert (cfg.num_speculative_tokens, cfg.prompt_lookup_min, cfg.prompt_lookup_max) == (5, 3, 5)
    for spec, extra in [("eagle", None), ("ngram:x", None), ("ngram:0", None), ("ngram", '{"bogus": 1}'),
                        ("ngram", '{"prompt_lookup_min": 5, "prompt_lookup_max": 2}'), ("ngram", "[1]")]:
        with pytest.raises(ValueError):
            SpeculativeConfig.parse(spec, extra)


def test_cli_flags_reach_the_engine_config():
    from lucid.cli import build_parser
    from lucid.errors import LucidError
    from lucid.server.cli_serve import engine_config_from_args

    args = build_parser().parse_args(["serve", "--speculative", "ngram:6", "--speculative-config",
                                      '{"max_batch_size": 2}'])
    spec = engine_config_from_args(args).speculative
    assert (spec.num_speculative_tokens, spec.max_batch_size) == (6, 2)
    assert engine_config_from_args(build_parser().parse_args(["serve"])).speculative is None
    with pytest.raises(LucidError, match="speculative"):
        engine_config_from_args(build_parser().parse_args(["serve", "--speculative", "medusa"]))


# ---- bookkeeping (no model) ------------------------------------------------------------------------------------
def test_scheduler_turns_a_drafting_decode_row_into_a_verify_row_and_trim_hands_back_blocks():
    blocks = BlockManager(num_blocks=8, block_size=4)
    scheduler = Scheduler(EngineConfig(block_size=4), blocks, Speculator(SpeculativeConfig(num_speculative_tokens=4,
                                                                                         **FREE_ROWS)))
    seq = Sequence("r", 0, [1, 2, 3, 1, 2], SamplingParams(max_tokens=50))
    scheduler.add(seq)
    first = scheduler.schedule()
    assert [s.num_tokens for s in first.prefill] == [5] and not first.verify
    seq.num_computed_tokens = 5
    seq.append_token(3)                                       # tail (1, 2, 3) occurs earlier: period 3
    second = scheduler.schedule()
    (row,) = second.verify
    assert row.draft_token_ids == [1, 2, 3, 1] and row.num_tokens == 5 and row.token_ids == [3, 1, 2, 3, 1]
    assert not second.decode and row.samples and row.num_committed == 1
    assert len(seq.block_table) == 3                          # 6 tokens + 4 drafts need 3 blocks of 4
    blocks.trim(seq, 7)                                       # one draft kept: 7 tokens need 2 blocks
    assert len(seq.block_table) == 2 and blocks.num_used_blocks == 2


def test_the_cost_model_drafts_what_pays():
    # Rows cost 0.15 of a decode step, a verify row 0.05 more: a draft kept 1 time in 10 never pays...
    assert best_draft_length(0.1, 8, 1, 0.15, 0.05) == 0
    # ... one kept 1 time in 2 pays for a short draft, one kept 9 times in 10 for every draft allowed.
    assert 1 <= best_draft_length(0.5, 8, 1, 0.15, 0.05) <= 3
    assert best_draft_length(0.9, 8, 1, 0.15, 0.05) == 8
    assert best_draft_length(0.9, 3, 1, 0.15, 0.05) == 3
    # The batch's own rows share the step: the same drafts pay less beside 8 other sequences.
    assert best_draft_length(0.5, 8, 8, 0.15, 0.05) < best_draft_length(0.5, 8, 1, 0.15, 0.05)
    assert best_draft_length(0.05, 8, 1, 0.0, 0.0) == 8     # free rows: any chance of a kept draft pays


def generate_with_drafts(speculator: Speculator, seq: Sequence, script: list[int]) -> list[tuple[int, int]]:
    """Play the engine's part over a known output `script`: each step drafts, keeps the drafts that match the
    script and emits one token more. Returns (drafted, kept) per step."""
    steps = []
    while seq.num_output_tokens < len(script):
        speculator.begin_step(1)
        draft = speculator.draft(seq, 100)
        at = seq.num_output_tokens
        kept = 0
        while kept < len(draft) and at + kept + 1 < len(script) and draft[kept] == script[at + kept]:
            kept += 1
        for token in script[at:at + kept + 1]:
            seq.append_token(token)
        if draft:
            speculator.record(seq, len(draft), kept)
        steps.append((len(draft), kept))
    return steps


def test_drafting_steps_down_on_rejections_and_back_up_when_the_text_repeats():
    # (1, 2) is followed by a new token each time: every draft after it is rejected at once...
    novel = [t for i in range(3, 23) for t in (1, 2, i)]
    # ... until the text repeats a stretch of itself, which drafts predict.
    repeat = novel[-30:] * 2
    seq = Sequence("r", 0, [1, 2, 100], SamplingParams(max_tokens=500))
    speculator = Speculator(SpeculativeConfig(num_speculative_tokens=4))
    steps = generate_with_drafts(speculator, seq, novel)
    drafting = [drafted for drafted, _ in steps if drafted]
    assert 1 <= len(drafting) <= 4 and sum(kept for _, kept in steps) == 0   # a few tries, then no more
    assert seq.spec.rate < 0.2 and seq.spec.shadow                # still looked up each time, scored for free
    before = speculator.num_drafted
    steps = generate_with_drafts(speculator, seq, novel + repeat)
    kept = sum(k for _, k in steps)
    assert kept >= 30 and len(steps) < 0.6 * len(repeat)         # drafting came back for the copied stretch
    assert speculator.num_drafted - before < 1.3 * kept           # ... with few rejected drafts on the way


def test_drafting_stops_for_large_batches_and_near_max_tokens():
    speculator = Speculator(SpeculativeConfig(num_speculative_tokens=2, max_batch_size=2, **FREE_ROWS))
    assert speculator.begin_step(2) and not speculator.begin_step(3)
    seq = Sequence("r", 0, [7, 7, 7, 7], SamplingParams(max_tokens=50))
    assert speculator.draft(seq, 10) == [7, 7]
    speculator.record(seq, 2, 2)
    assert (speculator.num_drafted, speculator.num_accepted) == (2, 2)
    near_end = Sequence("r", 0, [7, 7, 7, 7], SamplingParams(max_tokens=2))
    near_end.append_token(7)
    assert speculator.draft(near_end, 10) == []               # one token left: nothing to draft


def test_constrained_sequences_are_not_drafted():
    """A draft row would need its own grammar state for its token mask: constrained rows decode one at a time."""
    from lucid.structured.spec import GrammarSpec

    speculator = Speculator(SpeculativeConfig(num_speculative_tokens=2, **FREE_ROWS))
    assert speculator.begin_step(1)
    free = Sequence("r", 0, [7, 7, 7, 7], SamplingParams(max_tokens=50))
    constrained = Sequence("s", 0, [7, 7, 7, 7], SamplingParams(max_tokens=50, structured=GrammarSpec.regex("7+")))
    assert speculator.draft(free, 10) == [7, 7]
    assert speculator.draft(constrained, 10) == []


# ---- exactness on the tiny model through the fused step -------------------------------------------------------
def quantized_tiny(dtype: torch.dtype = torch.float32):
    return quantize_model(fuse_projections(tiny_model(dtype)), "mixed")


def on_and_off(dtype: torch.dtype = torch.float32, **config):
    return (tiny_engine(quantized_tiny(dtype), speculative=SPEC, **config),
            tiny_engine(quantized_tiny(dtype), **config))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_is_bitwise_identical_with_and_without_speculation(dtype):
    on, off = on_and_off(dtype)
    assert on.runner.fused_decoder is not None
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=3)
    got, want = run_all(on, PROMPTS, params), run_all(off, PROMPTS, params)
    for g, w in zip(got, want):
        assert g.outputs[0].token_ids == w.outputs[0].token_ids
        # logprobs of accepted drafts come from the verify rows: bitwise the decode step's
        assert [t.logprob for t in g.outputs[0].logprobs] == [t.logprob for t in w.outputs[0].logprobs]
        assert [[a.token_id for a in t.top] for t in g.outputs[0].logprobs] == \
               [[a.token_id for a in t.top] for t in w.outputs[0].logprobs]
    assert on.speculator.num_accepted > 0 and on.num_steps < off.num_steps
    assert on.blocks.num_used_blocks == 0


@needs_kernels
def test_verify_rows_give_the_decode_steps_logits_whatever_shares_the_step():
    """The kernel-level promise: a row flagged to attend alone computes what a one-row decode step computes."""
    on, off = on_and_off(torch.bfloat16)
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, logprobs=5)
    # Mixed steps: verify rows beside plain decode rows and prompt chunks of later arrivals.
    for engine in (on, off):
        for i, prompt in enumerate(PROMPTS):
            engine.add_request(f"r{i}", prompt, params)
            engine.step()
    outs = {}
    for name, engine in (("on", on), ("off", off)):
        done = {}
        while engine.has_unfinished():
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = out.outputs[0]
        outs[name] = done
    for rid, want in outs["off"].items():
        got = outs["on"][rid]
        assert got.token_ids == want.token_ids
        assert [t.logprob for t in got.logprobs] == [t.logprob for t in want.logprobs]
    assert on.speculator.num_drafted > 0


@needs_kernels
def test_stops_and_max_tokens_inside_an_accepted_run():
    on, off = on_and_off()
    base = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    reference = run_all(off, PROMPTS, base)
    for prompt, ref in zip(PROMPTS, reference):
        tokens = ref.outputs[0].token_ids
        stop_id = tokens[7]
        cases = [SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, stop_token_ids=[stop_id]),
                 SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, stop=[f"[{stop_id}]"]),
                 SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)]
        for params in cases:
            (got,), (want,) = run_all(on, [prompt], params), run_all(off, [prompt], params)
            assert got.outputs[0].token_ids == want.outputs[0].token_ids
            assert got.outputs[0].text == want.outputs[0].text
            assert got.outputs[0].finish_reason == want.outputs[0].finish_reason
        assert len(run_all(on, [prompt], cases[2])[0].outputs[0].token_ids) == 6
    assert on.speculator.num_accepted > 0
    assert on.blocks.num_used_blocks == 0


@needs_kernels
def test_preemption_mid_speculation_frees_every_block():
    # 20 blocks of 4 tokens (K and V, 2 layers, 2 KV heads of 16 floats) cannot hold 5 sequences of ~60 tokens:
    # the scheduler preempts and recomputes.
    pool = 20 * 4 * 2 * 2 * 2 * 16 * 4
    on, off = on_and_off(kv_cache_memory=pool)
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    got, want = run_all(on, PROMPTS, params), run_all(off, PROMPTS, params)
    assert on.scheduler.num_preemptions > 0 and on.speculator.num_drafted > 0
    for g, w in zip(got, want):
        assert g.outputs[0].token_ids == w.outputs[0].token_ids  # float32: recomputation agrees with decode
    assert on.blocks.num_used_blocks == 0 and off.blocks.num_used_blocks == 0


@needs_kernels
def test_abort_mid_speculation_frees_every_block():
    on = tiny_engine(quantized_tiny(), speculative=SPEC)
    params = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)
    on.add_request("a", PROMPTS[2], params)
    on.add_request("b", PROMPTS[0], params)
    while on.speculator.num_drafted == 0:
        on.step()
    assert any(s.block_table for s in on.scheduler.running)
    on.abort("a")
    on.abort("b")
    assert on.blocks.num_used_blocks == 0 and not on.scheduler.running
    (after,) = run_all(on, [PROMPTS[1]], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
    assert len(after.outputs[0].token_ids) == 8 and on.blocks.num_used_blocks == 0


# ---- sampled: the output distribution is unchanged ------------------------------------------------------------
def chi_square_p(a: list[int], b: list[int]) -> float:
    """p-value of a chi-square test that two samples of categories come from one distribution (categories
    with fewer than 10 observations in all are pooled)."""
    cats = sorted(set(a) | set(b))
    counts = torch.tensor([[a.count(c), b.count(c)] for c in cats], dtype=torch.float64)   # (C, 2)
    rare = counts.sum(1) < 10
    if rare.any():
        counts = torch.cat([counts[~rare], counts[rare].sum(0, keepdim=True)])
    expected = counts.sum(1, keepdim=True) * counts.sum(0, keepdim=True) / counts.sum()
    stat = ((counts - expected) ** 2 / expected).nan_to_num().sum()
    df = counts.shape[0] - 1
    if df < 1:
        return 1.0
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2))


BIAS = {45: 3.0, 28: 3.0, 85: 3.0, 63: 3.0}   # peaks the random model's distribution on the prompt's tokens


@needs_kernels
@pytest.mark.timeout(300)
@pytest.mark.parametrize("options", [dict(temperature=1.0, logit_bias=BIAS),
                                     dict(temperature=0.8, top_k=12, top_p=0.95, min_p=0.02, repetition_penalty=1.3,
                                          presence_penalty=0.4, frequency_penalty=0.2, logit_bias=BIAS)])
def test_sampled_output_distribution_is_unchanged(options):
    """400 seeded samples of 4 tokens each, speculation on and off: each position's token and the first two as a
    pair must look like one distribution (chi-square, p > 1e-3), while drafts are both kept and rejected."""
    spec = SpeculativeConfig(num_speculative_tokens=3, prompt_lookup_min=1, max_batch_size=64, **FREE_ROWS)
    on = tiny_engine(quantized_tiny(), speculative=spec, max_num_seqs=64)
    off = tiny_engine(quantized_tiny(), max_num_seqs=64)
    prompt = [45, 28, 85, 63] * 4 + [45]
    n = 400
    samples = {}
    for name, engine in (("on", on), ("off", off)):
        # Different seeds on and off: the two samples must be independent draws.
        params = [SamplingParams(max_tokens=4, ignore_eos=True, seed=i + (0 if name == "on" else 10_000), **options)
                  for i in range(n)]
        for i, p in enumerate(params):
            engine.add_request(f"r{i}", prompt, p)
        done = {}
        while engine.has_unfinished():
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = tuple(out.outputs[0].token_ids)
        samples[name] = [done[f"r{i}"] for i in range(n)]
    drafted, accepted = on.speculator.num_drafted, on.speculator.num_accepted
    assert 0.05 * drafted < accepted < 0.95 * drafted, "the test must exercise both kept and rejected drafts"
    for position in range(4):
        p = chi_square_p([s[position] for s in samples["on"]], [s[position] for s in samples["off"]])
        assert p > 1e-3, f"position {position}: p = {p:.2e}"
    p = chi_square_p([s[:2] for s in samples["on"]], [s[:2] for s in samples["off"]])
    assert p > 1e-3, f"first two tokens: p = {p:.2e}"


# ---- the real model: greedy on vs off, token for token ------------------------------------------------------------
CHAT_QUESTIONS = [
    "Write a Python function that checks whether a number is prime.", "详细介绍下你自己。", "What is a closure?",
    "Explain the difference between a list and a tuple in Python.", "Write a haiku about autumn.",
    "How do I reverse a string in JavaScript?", "What does HTTP status 404 mean?", "Give three tips for a code review.",
    "Write a SQL query that counts users per country.", "What is the time complexity of binary search?",
    "Translate 'good morning' into French, Spanish and German.", "Write a bash loop over all .txt files.",
    "What is a race condition?", "Explain recursion with an example.", "Write a Rust function adding two numbers.",
    "What is the capital of Australia?", "How does git rebase differ from merge?", "Name the planets in order.",
]


def small_code_edit_prompts(count: int) -> list[str]:
    """The repo's own functions of 8-20 lines, each asked back with one rename (code edits, kept short)."""
    import ast
    from pathlib import Path

    prompts = []
    for path in sorted((Path(__file__).resolve().parent.parent / "lucid" / "engine").glob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and 8 <= node.end_lineno - node.lineno + 1 <= 20:
                body = "\n".join(lines[node.lineno - 1:node.end_lineno])
                prompts.append(f"```python\n{body}\n```\nRename `{node.name}` to `{node.name}_v2` and give the whole "
                               "function back, nothing else changed.")
    return prompts[:count]


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_kernels
def test_real_model_greedy_is_identical_with_speculation_on_and_off():
    """30 prompts (12 code edits of the repo's own functions, 18 questions), greedy, speculation off then on.

    Prompts go in groups whose prefill fits one step, so both runs prefill them identically; after that every row
    is a decode or verify row, whose logits do not depend on the rest of the batch."""
    from lucid.engine.speculative import Speculator
    from tests.conftest import shared_llm

    llm = shared_llm("bfloat16", "mixed")
    engine = llm.engine
    assert engine.runner.fused_decoder is not None
    prompts = [llm.encode_chat([{"role": "user", "content": q}])
               for q in small_code_edit_prompts(12) + CHAT_QUESTIONS]
    assert len(prompts) >= 30
    groups, group = [], []
    for p in prompts:
        if group and sum(map(len, group)) + len(p) > engine.engine_config.max_num_batched_tokens:
            groups.append(group)
            group = []
        group.append(p)
    groups.append(group)
    params = SamplingParams(temperature=0, max_tokens=32)
    speculator = Speculator(SpeculativeConfig(num_speculative_tokens=6, max_batch_size=64, **FREE_ROWS))
    saved = engine.speculator, engine.scheduler.speculator
    try:
        engine.speculator = speculator
        for group in groups:
            engine.scheduler.speculator = None
            off = [o.outputs[0].token_ids for o in llm.generate(group, params)]
            engine.scheduler.speculator = speculator
            on = [o.outputs[0].token_ids for o in llm.generate(group, params)]
            assert on == off
    finally:
        engine.speculator, engine.scheduler.speculator = saved
    assert speculator.num_accepted > 30, (speculator.num_drafted, speculator.num_accepted)
    assert engine.blocks.num_used_blocks == 0


def test_trace_marks_the_drafts_the_engine_would_keep():
    """The trace's marker replays the proposer: a repeated pattern is drafted and kept, a departure rejected."""
    from lucid.inspect.trace import TraceStep
    from lucid.inspect.trace_spec import DraftMarker

    marker = DraftMarker(SpeculativeConfig(num_speculative_tokens=3, **FREE_ROWS), [1, 2, 3, 4, 1, 2], max_tokens=20)
    steps = [TraceStep(i, [], token, "", 0.0, 0.0, 0.0, 1) for i, token in enumerate([3, 4, 9, 5])]
    for step in steps:
        marker.mark(step)
    # (1, 2) was seen before, followed by 3, 4, 1: 3 and 4 kept, 1 proposed but 9 chosen; then nothing to draft.
    assert [(s.draft_id, s.drafted) for s in steps] == [(3, True), (4, True), (1, False), (None, False)]
    assert (marker.speculator.num_drafted, marker.speculator.num_accepted) == (3, 2)


def test_eager_path_verifies_drafts_as_prompt_chunks():
    """Without the fused step (--enforce-eager, unquantized weights, CUDA) a verify row runs as a prompt chunk:
    the same tokens in float32, where chunked and one-token attention agree to rounding."""
    on = tiny_engine(tiny_model(), speculative=SPEC)
    off = tiny_engine(tiny_model())
    assert on.runner.fused_decoder is None
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    got, want = run_all(on, PROMPTS, params), run_all(off, PROMPTS, params)
    assert [g.outputs[0].token_ids for g in got] == [w.outputs[0].token_ids for w in want]
    assert on.speculator.num_accepted > 0 and on.blocks.num_used_blocks == 0


def test_kept_drafts_are_flagged_in_logprobs_and_the_api_extension():
    """Each token a verify row kept as a draft carries `drafted` to its logprob and, as `"drafted": true`, to the
    chat API's logprobs (absent on every other token, so answers without speculation are unchanged)."""
    from lucid.server.logprobs import chat_logprobs

    on = tiny_engine(tiny_model(), speculative=SPEC)
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, logprobs=2)
    outs = run_all(on, PROMPTS, params)
    flags = [t.drafted for out in outs for t in out.outputs[0].logprobs]
    assert sum(flags) == on.speculator.num_accepted > 0 and not all(flags)
    off = run_all(tiny_engine(tiny_model()), PROMPTS, params)
    assert not any(t.drafted for out in off for t in out.outputs[0].logprobs)

    class Bytes:
        def token_bytes(self, token_id: int) -> list[int]:
            return [token_id % 256]

    items = outs[0].outputs[0].logprobs
    content = chat_logprobs(items, Bytes(), 2)["content"]
    assert [entry.get("drafted", False) for entry in content] == [t.drafted for t in items]
    assert all(entry.get("drafted", True) is True for entry in content)
    assert set(content[0]) <= {"token", "logprob", "bytes", "top_logprobs", "drafted"}
