"""The real default model (Qwen2.5-Coder-0.5B-Instruct GGUF) against HF transformers on the same weights, fp32.

These pin fp32 and unquantized weights so that later speed work cannot silently change them.
"""

from __future__ import annotations

import pytest
import torch

from lucid import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REFERENCE_MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": "详细介绍下你自己。"}]
REFERENCE_IDS = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 113511, 16872,
                 107828, 1773, 151645, 198, 151644, 77091, 198]
PROMPTS = {
    "chinese": "用一句话介绍一下杭州。",
    "english": "Explain in two sentences what a KV cache is.",
    "code": "Write a Python function that returns the n-th Fibonacci number.",
}
TIE_MARGIN = 0.05   # fp32 logits: a chosen token must be within this of the reference's best


@pytest.fixture(scope="module")
def hf_model(real_gguf_path):
    """transformers' Qwen2 reading the same GGUF, dequantized to fp32 (the reference implementation)."""
    from transformers import AutoModelForCausalLM, GgufConfig

    folder, name = str(real_gguf_path.parent), real_gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=name, dequantize=True))
    return model.eval()


def test_reference_prompt_encodes_to_the_23_ids(real_llm):
    assert real_llm.encode_chat(REFERENCE_MESSAGES) == REFERENCE_IDS


def test_bf16_greedy_gives_the_reference_bf16_answer(real_llm):
    """REFERENCE.md: with bf16-rounded weights, greedy decoding answers with these 19 ids."""
    out = real_llm.chat(REFERENCE_MESSAGES, SamplingParams(temperature=0, max_tokens=64))[0].outputs[0]
    assert out.text == "作为一个AI助手，我没有个人经历或情感，因此我不能提供自己的详细信息。"
    assert out.finish_reason == "stop" and len(out.token_ids) == 19


def test_greedy_agrees_with_transformers_fp32_tie_aware(real_llm_fp32, hf_model):
    llm = real_llm_fp32
    conversations = [[{"role": "user", "content": p}] for p in PROMPTS.values()]
    conversations.append(REFERENCE_MESSAGES)
    outputs = llm.chat(conversations, SamplingParams(temperature=0, max_tokens=32))   # one batch
    worst_gap, worst_logit_diff = 0.0, 0.0
    for conversation, out in zip(conversations, outputs):
        prompt = llm.encode_chat(conversation)
        ours = out.outputs[0].token_ids
        with torch.inference_mode():
            ref_logits = hf_model(torch.tensor([prompt + ours])).logits[0].float()      # (T, V), teacher-forced
            lucid_logits = llm.model(torch.tensor([prompt]))[0, -1]
        # The last prompt position: the same weights in the same dtype give the same logits.
        worst_logit_diff = max(worst_logit_diff, float((lucid_logits - ref_logits[len(prompt) - 1]).abs().max()))
        for step, token in enumerate(ours):
            row = ref_logits[len(prompt) - 1 + step]
            gap = float(row.max() - row[token])
            worst_gap = max(worst_gap, gap)
            assert gap <= TIE_MARGIN, (f"step {step} of {conversation[-1]['content']!r}: lucid chose {token}, "
                                       f"{gap:.4f} below transformers' best {int(row.argmax())}")
    print(f"\nmax |lucid - transformers| last-position logit: {worst_logit_diff:.2e}; "
          f"largest greedy tie gap: {worst_gap:.4f}")
    assert worst_logit_diff < 1e-2
