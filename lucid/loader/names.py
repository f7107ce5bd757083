"""The explicit table between GGUF tensor names (llama.cpp's) and Hugging Face Qwen2 names."""

from __future__ import annotations

import re

# Whole-model tensors: GGUF name -> HF name.
GLOBAL_NAMES: dict[str, str] = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

# Per-layer tensors: the part after "blk.N." -> the part after "model.layers.N.".
LAYER_NAMES: dict[str, str] = {
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

_GGUF_LAYER = re.compile(r"blk\.(\d+)\.(.+)")
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_HF_TO_GLOBAL = {hf: gg for gg, hf in GLOBAL_NAMES.items()}
_HF_TO_LAYER = {hf: gg for gg, hf in LAYER_NAMES.items()}


def gguf_to_hf(name: str) -> str | None:
    """HF name of a GGUF tensor, or None when the table does not know it."""
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    match = _GGUF_LAYER.fullmatch(name)
    if match and match.group(2) in LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{LAYER_NAMES[match.group(2)]}"
    return None


def hf_to_gguf(name: str) -> str | None:
    """GGUF name of an HF tensor, or None when the table does not know it."""
    if name in _HF_TO_GLOBAL:
        return _HF_TO_GLOBAL[name]
    match = _HF_LAYER.fullmatch(name)
    if match and match.group(2) in _HF_TO_LAYER:
        return f"blk.{match.group(1)}.{_HF_TO_LAYER[match.group(2)]}"
    return None
