"""Qwen2: pre-norm layers, q/k/v with bias, SwiGLU, one RoPE base. HF module names; no file I/O here."""

from lucid.config import ModelConfig
from lucid.layers.attention import Qwen2Attention
from lucid.layers.mlp import Qwen2MLP
from lucid.layers.rmsnorm import RMSNorm
from lucid.layers.rotary import RotaryEmbedding
from lucid.models.base import CausalLM, DecoderModel, PreNormDecoderLayer
from lucid.models.base import build_model as build_model  # re-exported: the builder serves every family

# GGUF tensor names (after "blk.N.") -> HF names (after "model.layers.N."); llama.cpp's names for this family.
GGUF_LAYER_NAMES: dict[str, str] = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


class Qwen2DecoderLayer(PreNormDecoderLayer):
    def __init__(self, config: ModelConfig, rotary_emb: RotaryEmbedding) -> None:
        super().__init__(config,
                         Qwen2Attention(config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                                        rotary_emb),
                         Qwen2MLP(config.hidden_size, config.intermediate_size))


class Qwen2Model(DecoderModel):
    def __init__(self, config: ModelConfig) -> None:
        rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta, config.max_position_embeddings)
        super().__init__(config, [Qwen2DecoderLayer(config, rotary_emb) for _ in range(config.num_hidden_layers)],
                         RMSNorm(config.hidden_size, config.rms_norm_eps))


class Qwen2ForCausalLM(CausalLM):
    model_class = Qwen2Model

    @classmethod
    def fused_step_blocker(cls, config: ModelConfig) -> str | None:
        return None  # the fused kernel was written for this layer

