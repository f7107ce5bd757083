"""Llama (Llama 2/3, SmolLM2, Mistral-shaped models): Qwen2's layer without q/k/v bias (unless attention_bias), an
optional rope scaling (Llama 3's "llama3" or "linear") and an optional tied head. HF module names; no file I/O.

llama.cpp's converter stores Llama's q/k rows interleaved for its own RoPE layout; `unpermute_qk` undoes it on load.
"""

import torch

from lucid.config import ModelConfig
from lucid.layers.attention import Attention
from lucid.layers.mlp import GatedMLP
from lucid.layers.rmsnorm import RMSNorm
from lucid.layers.rotary import RotaryEmbedding
from lucid.models.base import CausalLM, DecoderModel, PreNormDecoderLayer
from lucid.models.qwen2 import GGUF_LAYER_NAMES

__all__ = ["GGUF_LAYER_NAMES", "LlamaForCausalLM", "unpermute_qk"]


class LlamaDecoderLayer(PreNormDecoderLayer):
    qk_norm = False  # Qwen3's layer is this one with an RMSNorm on each query and key head

    def __init__(self, config: ModelConfig, rotary_emb: RotaryEmbedding) -> None:
        qk_norm = (lambda dim: RMSNorm(dim, config.rms_norm_eps)) if self.qk_norm else None
        attn = Attention(config.hidden_size, config.num_attention_heads, config.num_key_value_heads, rotary_emb,
                         head_dim=config.head_dim, bias=config.attention_bias, qk_norm=qk_norm)
        super().__init__(config, attn, GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act))


class LlamaModel(DecoderModel):
    layer_class: type[LlamaDecoderLayer] = LlamaDecoderLayer

    def __init__(self, config: ModelConfig) -> None:
        rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta, config.max_position_embeddings,
                                     config.rope_scaling)
        super().__init__(config, [self.layer_class(config, rotary_emb) for _ in range(config.num_hidden_layers)],
                         RMSNorm(config.hidden_size, config.rms_norm_eps))


class LlamaForCausalLM(CausalLM):
    model_class = LlamaModel

    @classmethod
    def fused_step_blocker(cls, config: ModelConfig) -> str | None:
        # The kernel's layer is Qwen2's; q/k/v biases are optional there. Its RoPE is the plain theta^(-2i/d) one.
        if config.rope_scaling:
            return "the fused kernel has no rope scaling"
        if config.hidden_act != "silu":
            return f"the fused kernel's MLP is SwiGLU, not {config.hidden_act}"
        return None


def unpermute_qk(name: str, tensor: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """GGUF -> HF for q_proj/k_proj weights: llama.cpp pairs each head's dims (0,1), (2,3)... for its RoPE; HF rotates
    half against half. Rows per head go from (half, 2) back to (2, half)."""
    heads = _rotated_heads(name, config)
    if heads is None:
        return tensor
    half = tensor.shape[0] // heads // 2
    # (rows, in) -> (heads, half, 2, in) -> (heads, 2, half, in) -> (rows, in)
    return tensor.reshape(heads, half, 2, *tensor.shape[1:]).transpose(1, 2).reshape(tensor.shape).contiguous()


def permute_qk(name: str, tensor: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """HF -> GGUF, the inverse of `unpermute_qk` (for writing test files as llama.cpp's converter does)."""
    heads = _rotated_heads(name, config)
    if heads is None:
        return tensor
    half = tensor.shape[0] // heads // 2
    # (rows, in) -> (heads, 2, half, in) -> (heads, half, 2, in) -> (rows, in)
    return tensor.reshape(heads, 2, half, *tensor.shape[1:]).transpose(1, 2).reshape(tensor.shape).contiguous()


def _rotated_heads(name: str, config: ModelConfig) -> int | None:
    """How many heads a q_proj / k_proj weight holds; None for any other tensor."""
    if name.endswith("self_attn.q_proj.weight"):
        return config.num_attention_heads
    if name.endswith("self_attn.k_proj.weight"):
        return config.num_key_value_heads
    return None
