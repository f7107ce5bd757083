"""Gemma 3 (text): four norms per layer (before and after attention and MLP), Gemma's (1 + w) RMSNorm, GELU-tanh MLP,
embeddings scaled by sqrt(hidden), q/k RMSNorm, scores scaled by query_pre_attn_scalar^-0.5, and interleaved layers:
most attend within a sliding window and rotate with a local RoPE base, every few attend globally with the global
base. HF module names; no file I/O here.

llama.cpp's converter stores Gemma's norm weights as 1 + w; `gguf_norms_to_hf` subtracts the 1 on load.
"""

import torch

from lucid.config import ModelConfig
from lucid.layers.attention import Attention
from lucid.layers.attention_metadata import AttentionMetadata
from lucid.layers.mlp import GatedMLP
from lucid.layers.rmsnorm import GemmaRMSNorm
from lucid.layers.rotary import RotaryEmbedding
from lucid.models.base import CausalLM, DecoderModel

GGUF_LAYER_NAMES: dict[str, str] = {
    "attn_norm.weight": "input_layernorm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
SLIDING_WINDOW_PATTERN = 6  # every 6th layer attends globally (Gemma 3's released models)


def default_layer_types(num_layers: int, pattern: int = SLIDING_WINDOW_PATTERN) -> tuple[str, ...]:
    return tuple("full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(num_layers))


class Gemma3DecoderLayer(torch.nn.Module):
    def __init__(self, config: ModelConfig, layer: int, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        scalar = config.query_pre_attn_scalar or config.head_dim
        self.self_attn = Attention(h, config.num_attention_heads, config.num_key_value_heads, rotary_emb,
                                   head_dim=config.head_dim, bias=config.attention_bias,
                                   qk_norm=lambda dim: GemmaRMSNorm(dim, eps), scaling=scalar ** -0.5,
                                   sliding_window=config.sliding_window if config.is_sliding(layer) else None)
        self.mlp = GatedMLP(h, config.intermediate_size, config.hidden_act)
        self.input_layernorm = GemmaRMSNorm(h, eps)
        self.post_attention_layernorm = GemmaRMSNorm(h, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(h, eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(h, eps)

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata | None) -> torch.Tensor:
        attn = self.self_attn(self.input_layernorm(hidden), positions, meta)
        hidden = hidden + self.post_attention_layernorm(attn)
        mlp = self.mlp(self.pre_feedforward_layernorm(hidden))
        return hidden + self.post_feedforward_layernorm(mlp)

    def fused_norms(self) -> dict[str, torch.nn.Module]:
        """See PreNormDecoderLayer.fused_norms: HF's post_attention_layernorm is Gemma's attention-output norm."""
        return {"input": self.input_layernorm, "pre_mlp": self.pre_feedforward_layernorm,
                "attn_out": self.post_attention_layernorm, "mlp_out": self.post_feedforward_layernorm}


class Gemma3TextModel(DecoderModel):
    def __init__(self, config: ModelConfig) -> None:
        positions = config.max_position_embeddings
        global_rope = RotaryEmbedding(config.head_dim, config.rope_theta, positions, config.rope_scaling)
        local_rope = RotaryEmbedding(config.head_dim, config.rope_local_base_freq, positions)
        layers = [Gemma3DecoderLayer(config, i, local_rope if config.is_sliding(i) else global_rope)
                  for i in range(config.num_hidden_layers)]
        super().__init__(config, layers, GemmaRMSNorm(config.hidden_size, config.rms_norm_eps))
        self.embed_scale = config.hidden_size ** 0.5


class Gemma3ForCausalLM(CausalLM):
    model_class = Gemma3TextModel
    # `-q mixed` keeps Gemma 3 in int8 throughout: int4 gate/up (re-quantized from the GGUF's 5-bit Q5_0) raised
    # Gemma 3 270M's perplexity on benchmarks/data/perplexity.txt from 21.77 (int8) to 24.29, llama.cpp 21.71.
    mixed_int4_layers: tuple[str, ...] = ()

    @classmethod
    def fused_step_blocker(cls, config: ModelConfig) -> str | None:
        # The kernel takes the four norms ((1 + w) folded into plain weights), q/k norms, GELU-tanh, a rotary base,
        # a score scale and a sliding window per layer; the embedding scale is applied before it (DecoderModel.embed).
        if config.rope_scaling:
            return "the fused kernel has no rope scaling"
        return None


def gguf_norms_to_hf(name: str, tensor: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """GGUF -> HF: llama.cpp stores every Gemma norm weight as 1 + w."""
    return tensor - 1.0 if name.endswith("norm.weight") else tensor


def hf_norms_to_gguf(name: str, tensor: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """HF -> GGUF, the inverse of `gguf_norms_to_hf` (for writing test files as llama.cpp's converter does)."""
    return tensor + 1.0 if name.endswith("norm.weight") else tensor
