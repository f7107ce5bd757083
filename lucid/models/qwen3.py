"""Qwen3: Qwen2's layer without q/k/v bias, with an RMSNorm on each query and key head before RoPE, and an explicit
head_dim (128 in the released models, not hidden / heads). HF module names; no file I/O here."""

from lucid.config import ModelConfig
from lucid.layers.attention import Attention
from lucid.layers.mlp import GatedMLP
from lucid.layers.rmsnorm import RMSNorm
from lucid.layers.rotary import RotaryEmbedding
from lucid.models.base import CausalLM, DecoderModel, PreNormDecoderLayer
from lucid.models.qwen2 import GGUF_LAYER_NAMES as QWEN2_GGUF_LAYER_NAMES

GGUF_LAYER_NAMES: dict[str, str] = {
    **QWEN2_GGUF_LAYER_NAMES,
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
}


class Qwen3DecoderLayer(PreNormDecoderLayer):
    def __init__(self, config: ModelConfig, rotary_emb: RotaryEmbedding) -> None:
        attn = Attention(config.hidden_size, config.num_attention_heads, config.num_key_value_heads, rotary_emb,
                         head_dim=config.head_dim, bias=config.attention_bias,
                         qk_norm=lambda dim: RMSNorm(dim, config.rms_norm_eps))
        super().__init__(config, attn, GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act))


class Qwen3Model(DecoderModel):
    def __init__(self, config: ModelConfig) -> None:
        rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta, config.max_position_embeddings,
                                     config.rope_scaling)
        super().__init__(config, [Qwen3DecoderLayer(config, rotary_emb) for _ in range(config.num_hidden_layers)],
                         RMSNorm(config.hidden_size, config.rms_norm_eps))


class Qwen3ForCausalLM(CausalLM):
    model_class = Qwen3Model

    @classmethod
    def fused_step_blocker(cls, config: ModelConfig) -> str | None:
        return "the fused kernel has no per-head q/k RMSNorm (Qwen3)"
