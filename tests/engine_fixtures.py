"""A tiny random Qwen2 and a stand-in tokenizer, for engine tests that need no files on disk."""

from __future__ import annotations

import torch

from lucid.config import EngineConfig, ModelConfig
from lucid.engine.llm_engine import LLMEngine
from lucid.models.qwen2 import Qwen2ForCausalLM, build_model

TINY = ModelConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, max_position_embeddings=512,
                   eos_token_id=127)


class IdTokenizer:
    """Each id is its own 'character', written as a bracketed number: enough to test the engine's text paths."""

    eos_token_ids = [127]
    vocab_size = 128

    def encode(self, text: str) -> list[int]:
        return [int(part) for part in text.split()]

    def token_text(self, token_id: int) -> str:
        return f"[{token_id}]"

    def detokenizer(self, prompt_ids=(), skip_special_tokens: bool = True):
        return _IdDetokenizer()


class _IdDetokenizer:
    def add(self, token_id: int) -> str:
        return "" if token_id == 127 else f"[{token_id}]"

    def flush(self) -> str:
        return ""


def tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    reference = Qwen2ForCausalLM(TINY)
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.3)  # large weights: sharp, non-degenerate distributions
    return build_model(TINY, {k: v.detach().clone() for k, v in reference.state_dict().items()}, dtype)


def tiny_engine(model: Qwen2ForCausalLM | None = None, **config) -> LLMEngine:
    engine_config = EngineConfig(**{"kv_cache_memory": 1 << 20, "block_size": 4, **config})
    return LLMEngine(model or tiny_model(), IdTokenizer(), TINY, engine_config, {}, "tiny")


def run_all(engine: LLMEngine, prompts: list[list[int]], params) -> list:
    ids = [f"r{i}" for i in range(len(prompts))]
    for rid, prompt in zip(ids, prompts):
        engine.add_request(rid, prompt, params)
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    return [done[i] for i in ids]
