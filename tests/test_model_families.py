"""Every family (Qwen2, Qwen3, Llama, Gemma 3) against transformers' own classes: tiny random models (seeded, fp32)
through lucid's engine (paged KV pool, chunked prefill, a batch of 3, prefix cache), lucid's GGUF reading of the
same weights, the quantized formats, the fused step's family check, parameter counts and the trace."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import run_all

from lucid import LLM, SamplingParams
from lucid.config import EngineConfig
from lucid.engine.llm_engine import LLMEngine
from lucid.inspect.params import count_unique
from lucid.inspect.trace import new_trace, prompt_for, run_trace_loop
from lucid.loader import load, load_quantized, read_checkpoint
from lucid.testing_families import FAMILIES, SLIDING_WINDOW, make_tiny_family

DECODE_STEPS = 16
# Three prompts in one batch; the first is long enough to be prefilled in several chunks and, for Gemma 3, runs
# well past its sliding window (8) before decoding even starts.
PROMPTS = [list(range(40, 70)), [7, 300, 9, 11, 400, 13, 2, 5, 600, 17, 18], [42, 43, 44, 45, 46]]


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    return make_tiny_family(request.param, tmp_path_factory.mktemp(request.param))


def engine_for(model, config, **options) -> LLMEngine:
    from lucid.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_hf_folder(options.pop("folder"))
    engine_config = EngineConfig(**{"kv_cache_memory": 1 << 21, "block_size": 4, "max_num_seqs": 3,
                                    "max_num_batched_tokens": 7, **options})
    return LLMEngine(model, tokenizer, config, engine_config, {}, "tiny")


def reference_logprobs(reference, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return reference(torch.tensor([ids])).logits[0].float().log_softmax(-1)   # (T, V)


def test_engine_logits_equal_transformers(tiny):
    loaded = load(tiny.hf_dir, "float32")
    engine = engine_for(loaded.model, loaded.config, folder=tiny.hf_dir)
    params = SamplingParams(temperature=0, max_tokens=DECODE_STEPS, ignore_eos=True, logprobs=5)
    outputs = run_all(engine, PROMPTS, params)
    if tiny.family == "gemma3":
        assert len(PROMPTS[0]) + DECODE_STEPS > 3 * SLIDING_WINDOW
        assert any(layer.self_attn.sliding_window for layer in loaded.model.model.layers)
    for prompt, out in zip(PROMPTS, outputs):
        completion = out.outputs[0]
        assert len(completion.token_ids) == DECODE_STEPS
        want = reference_logprobs(tiny.reference, prompt + completion.token_ids)
        assert want.std() > 0.5, "the random model's distribution is too flat to test anything"
        for step, lp in enumerate(completion.logprobs):
            row = want[len(prompt) - 1 + step]
            assert abs(lp.logprob - float(row[lp.token_id])) < 1e-4, (tiny.family, step)
            assert float(row[lp.token_id]) > float(row.max()) - 1e-4, "greedy did not pick transformers' argmax"
            for alt in lp.top:
                assert abs(alt.logprob - float(row[alt.token_id])) < 1e-4, (tiny.family, step, alt.token_id)
    # The same prompts again: their full blocks now come from the prefix cache, the answers must not change.
    again = run_all(engine, PROMPTS, params)
    assert again[0].num_cached_tokens >= 24 and again[1].num_cached_tokens >= 8
    assert [o.outputs[0].token_ids for o in again] == [o.outputs[0].token_ids for o in outputs]


def test_gguf_holds_the_same_model(tiny):
    """The GGUF (llama.cpp's names and layouts for the family) reads back to exactly the HF folder's tensors."""
    hf = read_checkpoint(tiny.hf_dir, torch.float32)
    gg = read_checkpoint(tiny.gguf_path, torch.float32)
    assert type(gg.config.architectures) is tuple and gg.config.architectures == hf.config.architectures
    for field in ("head_dim", "num_key_value_heads", "tie_word_embeddings", "rope_theta", "sliding_window"):
        assert getattr(gg.config, field) == getattr(hf.config, field), field
    names = set(hf.tensors) - ({"lm_head.weight"} if hf.config.tie_word_embeddings else set())
    assert set(gg.tensors) == names
    for name in names:
        torch.testing.assert_close(gg.tensors[name], hf.tensors[name], atol=1e-6, rtol=0, msg=name)


def test_parameter_count_is_exact(tiny):
    model = load(tiny.hf_dir, "float32").model
    assert count_unique(model) == sum(p.numel() for p in tiny.reference.parameters())  # both count a tied head once
    assert set(model.state_dict()) - {"lm_head.weight"} == set(tiny.reference.state_dict()) - {"lm_head.weight"}


@pytest.mark.parametrize("scheme", ["int8", "int4", "mixed"])
def test_quantized_formats_run_every_family(tiny, scheme):
    float_model = load(tiny.hf_dir, "float32")
    quantized = load_quantized(tiny.hf_dir, scheme, "float32")
    ids = torch.tensor([PROMPTS[1]])
    with torch.inference_mode():
        want, got = float_model.model(ids)[0, -1], quantized.model(ids)[0, -1]
    # Weight-only quantization of a random model: the logits move a little, never far.
    assert torch.isfinite(got).all() and (got - want).abs().max() < 0.25 * want.abs().max()
    engine = engine_for(quantized.model, quantized.config, folder=tiny.hf_dir)
    out = run_all(engine, PROMPTS, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert all(len(o.outputs[0].token_ids) == 4 for o in out)
    blocker = type(quantized.model).fused_step_blocker(quantized.config)
    if blocker is not None:  # Qwen3, Gemma 3, Llama with rope scaling: the explicit eager fallback
        assert engine.runner.fused_decoder is None


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_fused_step_runs_family(family, tmp_path):
    """Llama's layer is Qwen2's without q/k/v bias; Gemma 3's takes the kernel's options (four norms with (1 + w)
    folded, q/k norms, GELU-tanh, two rotary bases, its score scale, sliding windows). The fused C++ step runs their
    prompt chunks and decode steps and agrees with the eager path on the same quantized weights (both multiply
    through the same int8 kernels, so transformers' float model is not the reference here)."""
    from lucid import kernels

    if not kernels.available():
        pytest.skip(f"lucid kernels: {kernels.unavailable_reason()}")
    tiny = make_tiny_family(family, tmp_path, rope_scaling=False)
    fused_model = load_quantized(tiny.hf_dir, "mixed", "float32")
    eager_model = load_quantized(tiny.hf_dir, "mixed", "float32")
    fused = engine_for(fused_model.model, fused_model.config, folder=tiny.hf_dir)
    eager = engine_for(eager_model.model, eager_model.config, folder=tiny.hf_dir, enforce_eager=True)
    assert fused.runner.fused_decoder is not None and eager.runner.fused_decoder is None
    fused_rows = []
    original = fused.runner._fused_forward
    fused.runner._fused_forward = lambda items: fused_rows.append(sum(i.num_tokens for i in items)) or original(items)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=2)
    for g, w in zip(run_all(fused, PROMPTS, params), run_all(eager, PROMPTS, params)):
        got = torch.tensor([t.logprob for t in g.outputs[0].logprobs])
        want = torch.tensor([t.logprob for t in w.outputs[0].logprobs])
        assert g.outputs[0].token_ids == w.outputs[0].token_ids
        torch.testing.assert_close(got, want, atol=2e-3, rtol=0)
    # every step was fused, prompt chunks (several rows of one sequence) included
    assert len(fused_rows) == fused.num_steps and max(fused_rows) > len(PROMPTS)
    if family == "gemma3":  # the long prompt and its decode run past the window on the sliding layers
        assert len(PROMPTS[0]) > 3 * SLIDING_WINDOW and fused_model.config.sliding_window == SLIDING_WINDOW


def test_trace_runs(tiny):
    llm = LLM(str(tiny.hf_dir), dtype="float32")
    params = SamplingParams(temperature=0.0, max_tokens=6)
    text = prompt_for(llm.tokenizer, "Hello, how are you today?")
    trace = run_trace_loop(llm.model, llm.tokenizer, new_trace(llm.tokenizer, text, params, 6), params, 5)
    [out] = llm.generate([trace.prompt_ids], params)
    assert len(trace.steps) >= 1 and trace.output_ids == out.outputs[0].token_ids
