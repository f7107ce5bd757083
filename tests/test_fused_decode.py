"""The fused C++ decode step (lucid/kernels/decode.h) against the eager model it stands in for.

Both engines get the same fused, quantized tiny model (separate copies: a runner binds its KV pool to the layers).
In float32 the two paths do the same math up to summation order, so greedy tokens and logprobs must agree; the
batches below mix context lengths, blocks shared through the prefix cache and preempted sequences.
"""

from __future__ import annotations

import pytest
import torch

from lucid import kernels
from lucid.engine import model_runner
from lucid.fusion import fuse_projections
from lucid.kernels.fused import why_not_fused
from lucid.quantize import quantize_model
from lucid.sampling_params import SamplingParams
from tests.engine_fixtures import run_all, tiny_engine, tiny_model

pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"lucid kernels: {kernels.unavailable_reason()}")


def quantized_tiny(dtype: torch.dtype, scheme: str = "mixed"):
    return quantize_model(fuse_projections(tiny_model(dtype)), scheme)


def fused_and_eager(dtype: torch.dtype, **config):
    fused = tiny_engine(quantized_tiny(dtype), **config)
    eager = tiny_engine(quantized_tiny(dtype), enforce_eager=True, **config)
    assert fused.runner.fused_decoder is not None and eager.runner.fused_decoder is None
    return fused, eager


def count_fused_steps(engine) -> list[int]:
    """Wrap the runner's fused call to count the steps that took it (calls[0]), and count the steps that held a
    prompt chunk (calls[1])."""
    calls = [0, 0]
    original, original_run = engine.runner._fused_forward, engine.runner.run

    def counting(items):
        calls[0] += 1
        return original(items)

    def run(sched, eos_ids):
        calls[1] += bool(sched.prefill)
        return original_run(sched, eos_ids)

    engine.runner._fused_forward = counting
    engine.runner.run = run
    return calls


PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [9, 8, 7], [5] * 21, [1, 2, 3, 4, 5, 6, 7, 8, 40, 41], [3, 1, 4, 1, 5, 9, 2, 6]]


@pytest.mark.parametrize("prefill_budget", [0, model_runner.FUSED_PREFILL_ATTENTION_BUDGET])
def test_fused_matches_eager_in_float32(prefill_budget, monkeypatch):
    # budget 0: prompts prefill eagerly and only decode steps are fused; the default: prompt chunks fused too.
    monkeypatch.setattr(model_runner, "FUSED_PREFILL_ATTENTION_BUDGET", prefill_budget)
    fused, eager = fused_and_eager(torch.float32)
    calls = count_fused_steps(fused)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=3)
    got, want = run_all(fused, PROMPTS, params), run_all(eager, PROMPTS, params)
    steps = fused.num_steps
    # A prompt that shares a block with one being computed waits a step for it (the scheduler), so prompts may
    # enter over more than one step: with budget 0 each such step runs eagerly.
    assert calls[1] >= 1
    assert calls[0] == (steps if prefill_budget else steps - calls[1]), "steps did not take the fused path as expected"
    for g, w in zip(got, want):
        assert g.outputs[0].token_ids == w.outputs[0].token_ids
        got_lp = torch.tensor([t.logprob for t in g.outputs[0].logprobs])
        want_lp = torch.tensor([t.logprob for t in w.outputs[0].logprobs])
        torch.testing.assert_close(got_lp, want_lp, atol=2e-3, rtol=0)


def test_fused_matches_eager_under_preemption_and_prefix_sharing():
    # A pool of 12 blocks of 4 tokens cannot hold 5 sequences of ~40 tokens: the scheduler preempts and recomputes.
    fused, eager = fused_and_eager(torch.float32, kv_cache_memory=12 * 4 * 2 * 2 * 2 * 16 * 4)
    shared = [7, 7, 1, 2, 3, 4, 5, 6]  # two full blocks shared through the prefix cache
    prompts = [shared + [10 + i] for i in range(5)]
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    got = [o.outputs[0].token_ids for o in run_all(fused, prompts, params)]
    want = [o.outputs[0].token_ids for o in run_all(eager, prompts, params)]
    assert fused.scheduler.num_preemptions > 0
    assert got == want


def test_fused_bfloat16_stays_close_to_eager():
    # bf16: the eager path rounds activations to bf16 between ops, the fused path keeps float32, so only the first
    # tokens' distributions are compared, loosely.
    fused, eager = fused_and_eager(torch.bfloat16)
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True, logprobs=1)
    got, want = run_all(fused, PROMPTS, params), run_all(eager, PROMPTS, params)
    agree = sum(g.outputs[0].token_ids[:2] == w.outputs[0].token_ids[:2] for g, w in zip(got, want))
    assert agree >= len(PROMPTS) - 1
    for g, w in zip(got, want):
        assert abs(g.outputs[0].logprobs[1].logprob - w.outputs[0].logprobs[1].logprob) < 0.15 or \
            g.outputs[0].token_ids[1] != w.outputs[0].token_ids[1]


def test_fused_step_refuses_bad_tables_instead_of_reading_outside_the_pool():
    fused, _ = fused_and_eager(torch.float32)
    decoder = fused.runner.fused_decoder
    hidden = torch.zeros(1, 64)
    one = torch.tensor([0])
    with pytest.raises(RuntimeError, match="outside the pool"):
        decoder.forward(hidden, one, one, torch.tensor([[10_000]], dtype=torch.int32),
                        torch.tensor([1], dtype=torch.int32), 4)
    with pytest.raises(RuntimeError, match="context length"):
        decoder.forward(hidden, one, one, torch.tensor([[0]], dtype=torch.int32),
                        torch.tensor([9], dtype=torch.int32), 4)


def test_why_not_fused_names_the_reason():
    float_model = fuse_projections(tiny_model(torch.float32))
    assert "quantized" in why_not_fused(float_model, torch.device("cpu"))
    assert "CPU-only" in why_not_fused(quantized_tiny(torch.float32), torch.device("cuda"))
    assert why_not_fused(quantized_tiny(torch.float32, "int4"), torch.device("cpu")) is None


# ---- the real model, with lucid's default weights ----------------------------------------------------------------

REAL_PROMPTS = ["<|im_start|>user\nWrite a Python function that checks whether a number is prime.<|im_end|>\n"
                "<|im_start|>assistant\n",
                "<|im_start|>user\n详细介绍下你自己。<|im_end|>\n<|im_start|>assistant\n",
                "The capital of France is"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_model_fused_decode_agrees_with_eager_tie_aware():
    """Same mixed weights, fused vs eager decode: the same greedy tokens up to a near-tie, close logprobs.

    The eager bf16 path rounds activations to bf16 between ops and the fused path keeps float32, so a greedy
    answer may part ways only where the top two tokens are nearly tied."""
    from tests.conftest import shared_llm

    llm = shared_llm("bfloat16", "mixed")
    runner = llm.engine.runner
    assert runner.fused_decoder is not None
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True, logprobs=2)
    fused = llm.generate(REAL_PROMPTS, params)
    decoder, runner.fused_decoder = runner.fused_decoder, None
    try:
        eager = llm.generate(REAL_PROMPTS, params)
    finally:
        runner.fused_decoder = decoder
    for f, e in zip(fused, eager):
        got, want = f.outputs[0], e.outputs[0]
        same = next((i for i, (a, b) in enumerate(zip(got.token_ids, want.token_ids)) if a != b), len(got.token_ids))
        for a, b in zip(got.logprobs[:same], want.logprobs[:same]):
            assert abs(a.logprob - b.logprob) < 0.25
        if same < len(got.token_ids):
            top = got.logprobs[same].top
            assert top[0].logprob - top[1].logprob < 0.25, f"parted at token {same} without a near-tie"


def test_fused_matches_eager_when_prompts_join_running_streams():
    """Prompt chunks prefilled beside decoding sequences (mixed steps) take the fused path too."""
    def staggered(engine) -> dict[str, list[int]]:
        params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
        done: dict[str, list[int]] = {}
        for step in range(200):
            if step in (0, 3, 6):   # new requests arrive while earlier ones decode
                for k in range(2):
                    engine.add_request(f"s{step}-{k}", [step + 1, k + 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], params)
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = out.outputs[0].token_ids
            if not engine.has_unfinished() and step > 6:
                break
        return done

    fused, eager = fused_and_eager(torch.float32, max_prefill_tokens_while_decoding=4)
    calls = count_fused_steps(fused)
    got, want = staggered(fused), staggered(eager)
    assert len(got) == 6 and got == want
    assert calls[0] == fused.num_steps
