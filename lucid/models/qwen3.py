"""Qwen3: Llama's layer (Qwen2's without q/k/v bias) with an RMSNorm on each query and key head before RoPE, and
an explicit head_dim (128 in the released models, not hidden / heads). HF module names; no file I/O here."""

from lucid.config import ModelConfig
from lucid.models.base import CausalLM
from lucid.models.llama import LlamaDecoderLayer, LlamaModel
from lucid.models.qwen2 import GGUF_LAYER_NAMES as QWEN2_GGUF_LAYER_NAMES

GGUF_LAYER_NAMES: dict[str, str] = {
    **QWEN2_GGUF_LAYER_NAMES,
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
}


class Qwen3DecoderLayer(LlamaDecoderLayer):
    qk_norm = True


class Qwen3Model(LlamaModel):
    layer_class = Qwen3DecoderLayer


class Qwen3ForCausalLM(CausalLM):
    model_class = Qwen3Model

    @classmethod
    def fused_step_blocker(cls, config: ModelConfig) -> str | None:
        return "the fused kernel has no per-head q/k RMSNorm (Qwen3)"
