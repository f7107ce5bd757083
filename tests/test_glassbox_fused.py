"""The logit lens through the fused C++ step (the default engine on CPU): its last row is the distribution the engine
sampled from, bit for bit — for the first answer token (a prompt chunk's last row) and for decoded ones, with the
prompt chunked differently from the probe's recompute and other requests sharing the steps."""

from __future__ import annotations

import math

import pytest
import torch
from engine_fixtures import run_all, tiny_engine, tiny_model

from lucid import kernels
from lucid.fusion import fuse_projections
from lucid.glassbox.in_engine import probe_in_engine
from lucid.glassbox.lens import lens_logits, read_lens
from lucid.quantize import quantize_model
from lucid.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(not kernels.available(), reason=f"lucid kernels: {kernels.unavailable_reason()}")

TOLERANCE = 1e-3   # the bound (the reads below are exact: same logits, bit for bit)


def lens_vs_engine(engine, prompt: list[int], completion: list[int], logprobs: list) -> list[tuple[float, float, bool]]:
    """Per answer token: the lens's last-row probability, the engine's (its logprob, as the API shows it), and
    whether the lens's last-row logits give bit for bit the engine's logprob."""
    got_pairs = []
    for index, token in enumerate(completion):
        got = probe_in_engine(engine, prompt + completion[:index], prompt_len=len(prompt))
        lens = read_lens(engine.model, engine.tokenizer, got.probe.residuals, token, len(prompt) + index,
                         norm=got.probe.norm)
        assert len(lens.rows) == engine.model_config.num_hidden_layers + 1
        assert lens.rows[-1].top[0].token_id == logprobs[index].top[0].token_id
        last = lens_logits(engine.model, got.probe.residuals, got.probe.norm)[-1]
        exact = float(last.log_softmax(-1)[token]) == logprobs[index].logprob
        got_pairs.append((lens.rows[-1].prob, math.exp(logprobs[index].logprob), exact))
    return got_pairs


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lens_last_row_is_the_fused_engines_probability_on_the_tiny_model(dtype):
    model = quantize_model(fuse_projections(tiny_model(dtype)), "mixed")
    # Steps of 7 tokens: the 13-token prompts are prefilled in chunks of 7 and 6 beside each other's decode steps,
    # while the probe recomputes from the prefix cache's block boundary (block size 4) in one step.
    engine = tiny_engine(model, max_num_batched_tokens=7)
    assert engine.runner.fused_decoder is not None
    prompts = [[5, 17, 99, 3, 42, 42, 7, 64, 1, 88, 23, 9, 31], [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26]]
    params = SamplingParams(temperature=0.8, seed=7, max_tokens=6, ignore_eos=True, logprobs=2)
    for prompt, out in zip(prompts, run_all(engine, prompts, params), strict=True):
        completion = out.outputs[0].token_ids
        for lens_prob, shown, exact in lens_vs_engine(engine, prompt, completion, out.outputs[0].logprobs):
            assert exact and abs(lens_prob - shown) <= TOLERANCE
    assert engine.blocks.num_used_blocks == 0


def test_fused_taps_are_the_steps_own_numbers():
    # forward_tapped is forward plus copies: same output; its last residual, normed, is the output row.
    model = quantize_model(fuse_projections(tiny_model(torch.float32)), "mixed")
    engine = tiny_engine(model)
    runner = engine.runner
    [out] = run_all(engine, [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]], SamplingParams(temperature=0, max_tokens=3))
    got = probe_in_engine(engine, [3, 1, 4, 1, 5, 9, 2, 6, 5, 3] + out.outputs[0].token_ids[:2], prompt_len=10)
    residuals = got.probe.residuals
    assert residuals.shape == (model.config.num_hidden_layers + 1, model.config.hidden_size)
    with torch.inference_mode():
        embedding = model.model.embed_tokens(torch.tensor([out.outputs[0].token_ids[1]])).float()[0]
    assert torch.equal(residuals[0], embedding)
    att = got.probe.attention                      # (layers, heads, P + 1)
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:2]), rtol=0, atol=1e-5)
    assert runner.fused_decoder.final_norm(residuals).shape == residuals.shape


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lens_last_row_is_the_fused_engines_probability_on_the_real_model():
    from tests.conftest import shared_llm

    llm = shared_llm("bfloat16", "mixed")
    engine = llm.engine
    assert engine.runner.fused_decoder is not None
    prompt = llm.encode_chat([{"role": "user", "content": "Explain what a KV cache is in two sentences."}])
    [out] = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, logprobs=3))
    pairs = lens_vs_engine(engine, prompt, out.outputs[0].token_ids, out.outputs[0].logprobs)
    assert all(abs(lens_prob - shown) <= TOLERANCE and exact for lens_prob, shown, exact in pairs), pairs
