"""`lucid trace`: each step's candidates and probabilities; greedy picks the argmax and equals LLM.generate."""

from __future__ import annotations

import json

import pytest
import torch

from lucid import LLM, SamplingParams
from lucid.cli import main
from lucid.inspect.trace import Trace, new_trace, prompt_for, run_trace_loop

pytestmark = pytest.mark.timeout(180)

PROMPTS = ["Hello, how are you today?", "详细介绍下你自己。"]


@pytest.fixture(scope="module")
def llm(tiny_model) -> LLM:
    return LLM(str(tiny_model.hf_dir), dtype="float32")


def trace(llm: LLM, prompt: str, params: SamplingParams, steps: int, show: int = 5) -> Trace:
    text = prompt_for(llm.tokenizer, prompt)
    return run_trace_loop(llm.model, llm.tokenizer, new_trace(llm.tokenizer, text, params, steps), params, show)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_trace_picks_the_argmax_and_equals_generate(llm, prompt):
    params = SamplingParams(temperature=0.0, max_tokens=24)
    t = trace(llm, prompt, params, 24)
    assert len(t.steps) == 24 and t.finish_reason == "length"
    for step in t.steps:
        best = step.candidates[0]
        assert step.chosen_id == best.token_id
        assert best.logit == max(c.logit for c in step.candidates) == step.chosen_logit
        assert best.sampled_prob == 1.0 and step.kept == 1
    [out] = llm.generate([t.prompt_ids], params)
    assert t.output_ids == out.outputs[0].token_ids
    assert t.text == out.outputs[0].text


def test_trace_probabilities_follow_the_formulas(llm):
    """p is softmax(logits); after temperature T and top-k, the kept tokens' probabilities are softmax(logits / T)."""
    temperature, top_k = 0.8, 3
    params = SamplingParams(temperature=temperature, top_k=top_k, seed=7, max_tokens=6)
    t = trace(llm, PROMPTS[0], params, 6, show=5)
    for step in t.steps:
        logits = torch.tensor([c.logit for c in step.candidates])
        kept = logits[:top_k] / temperature
        assert step.kept == top_k
        assert [c.sampled_prob for c in step.candidates] == pytest.approx(
            kept.softmax(-1).tolist() + [0.0] * (len(logits) - top_k), abs=1e-5)
        assert step.chosen_id in [c.token_id for c in step.candidates[:top_k]]
        raw = [c.prob for c in step.candidates]
        assert raw == sorted(raw, reverse=True) and sum(raw) <= 1.0 + 1e-6
        assert raw[0] / raw[1] == pytest.approx(float(torch.exp(logits[0] - logits[1])), rel=1e-4)


def test_top_p_keeps_the_smallest_set_reaching_p(llm):
    params = SamplingParams(temperature=1.0, top_p=0.3, seed=1, max_tokens=4)
    for step in trace(llm, PROMPTS[1], params, 4, show=20).steps:
        probs = [c.prob for c in step.candidates]
        needed = next(i + 1 for i in range(len(probs)) if sum(probs[: i + 1]) >= 0.3)
        assert step.kept == needed
        assert sum(c.sampled_prob for c in step.candidates) == pytest.approx(1.0, abs=1e-5)


def test_seeded_traces_repeat(llm):
    params = SamplingParams(temperature=1.0, seed=42, max_tokens=8)
    assert trace(llm, PROMPTS[0], params, 8).output_ids == trace(llm, PROMPTS[0], params, 8).output_ids


def test_cli_json_and_human(tiny_model, llm, capsys):
    args = ["trace", PROMPTS[0], "--model", str(tiny_model.hf_dir), "--dtype", "float32", "-q", "none",
            "--temperature", "0", "--steps", "5"]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prompt_text"] == prompt_for(llm.tokenizer, PROMPTS[0])
    assert data["prompt_ids"] == llm.tokenizer.encode(data["prompt_text"])
    [out] = llm.generate([data["prompt_ids"]], SamplingParams(temperature=0, max_tokens=5))
    assert data["output_ids"] == out.outputs[0].token_ids
    assert main([*args, "--system", "Be brief.", "--show", "3"]) == 0
    human = capsys.readouterr().out
    assert "Be brief." in human and "step 5" in human and "→ chose" in human and "greedy" in human


def test_raw_prompt_has_no_template(tiny_model, capsys):
    assert main(["trace", "The quick brown fox", "--model", str(tiny_model.hf_dir), "--raw", "--steps", "2",
                 "--temperature", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["prompt_text"] == "The quick brown fox"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_default_model_greedy_trace_equals_generate():
    """On the real model (float32, so the cached and recomputed paths agree to ~1e-5 in logit)."""
    real = LLM(None, dtype="float32")
    params = SamplingParams(temperature=0.0, max_tokens=12)
    t = trace(real, "What is 2 + 2?", params, 12)
    assert all(s.chosen_id == s.candidates[0].token_id for s in t.steps)
    [out] = real.generate([t.prompt_ids], params)
    assert t.output_ids == out.outputs[0].token_ids
